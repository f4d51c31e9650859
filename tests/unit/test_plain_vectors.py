"""A plain Feast vector view (a Field with vector_index=True and no embedding tags) on every store plugin: it
applies, its vectors (pushed through Feast, or written by the processor's sink) read back as written, and on
the stores that search vectors ``retrieve_online_documents_v2`` answers the nearest, as a brute-force scan
over the same vectors does (the oracle). Views with embedding tags keep the in-stream embedding (other tests).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from core.settings import PROJECT_ROOT
from embeddings.spec import is_plain_vector_view, spec_for, vector_field
from stores.documents import distances
from stores.registry import kind_of, kinds, open_online_sink
from stores.repository import copy_repo, feast_apply
from stores.sink import UPSERT, SinkRow
from tests.conftest import LocalStore

DIM = 8
T0 = datetime(2026, 6, 1, tzinfo=UTC)
METRICS = {"item_embeddings": "cosine", "item_points": "l2"}
_IDS = itertools.count(1)

VIEWS = f'''
"""Plain Feast vector views: vectors given by the user (no embedding tags)."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int64, String

item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)


def plain(name: str, metric: str) -> FeatureView:
    history = FileSource(name=f"{{name}}_history", path=f"data/offline/{{name}}", timestamp_field="event_timestamp")
    return FeatureView(
        name=name,
        entities=[item],
        ttl=timedelta(0),
        schema=[
            Field(name="item_id", dtype=Int64),
            Field(name="title", dtype=String),
            Field(name="embedding", dtype=Array(Float32), vector_index=True, vector_length={DIM},
                  vector_search_metric=metric),
        ],
        source=PushSource(name=f"{{name}}_push", batch_source=history),
        online=True,
    )


item_embeddings = plain("item_embeddings", "COSINE")
item_points = plain("item_points", "L2")
'''


@pytest.fixture(scope="module")
def plain_repos(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, FeatureStore]:
    """The project's repository plus the plain vector views, applied on each store (namespace ``plain``)."""
    out = {}
    for kind in kinds():
        root = tmp_path_factory.mktemp(f"plain-{kind.name}") / "feature_repo"
        copy_repo(PROJECT_ROOT / "feature_repo", root)
        (root / "items.py").write_text(VIEWS)
        if kind.local is not None:
            local: LocalStore = request.getfixturevalue(f"local_{kind.name}")
            local.use_in(root, "plain")
            local.empty("plain")
            if kind.vectors is None:  # its users declare no embedding view there (feast-apply refuses them)
                views = root / "products.py"
                views.write_text(views.read_text().split("# History of product documents")[0])
        feast_apply(root)
        out[kind.name] = FeatureStore(repo_path=str(root))
    return out


@pytest.fixture(params=[k.name for k in kinds()])
def plain_store(
    request: pytest.FixtureRequest, plain_repos: dict[str, FeatureStore]
) -> Iterator[FeatureStore]:
    yield plain_repos[request.param]


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def push(store: FeatureStore, view: str, ids: list[int], vecs: np.ndarray) -> None:
    frame = pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"item {i}" for i in ids],
            "embedding": [v.tolist() for v in vecs],
            "event_timestamp": [T0] * len(ids),
        }
    )
    store.write_to_online_store(view, frame)


def sink_write(store: FeatureStore, view: str, ids: list[int], vecs: np.ndarray) -> None:
    """The processor's sink writing the view, as it does for a CDC source whose column holds the vector."""
    rows = [
        SinkRow(
            view, UPSERT, {"item_id": i}, {"title": f"item {i}", "embedding": v.tolist()}, T0 + timedelta(seconds=n),
            n + 1, "u", f"t[0] offset={n}", position=("t", 0, n),
        )
        for n, (i, v) in enumerate(zip(ids, vecs, strict=True))
    ]  # fmt: skip
    sink = open_online_sink(store)
    try:
        sink.add(rows)
        sink.flush()
    finally:
        sink.close()


def test_a_plain_vector_view_is_not_an_embedding_view(plain_repos: dict[str, FeatureStore]) -> None:
    view = plain_repos["sqlite"].get_feature_view("item_embeddings")
    assert spec_for(view) is None and is_plain_vector_view(view)
    assert vector_field(view) is not None and vector_field(view).dim == DIM  # type: ignore[union-attr]


@pytest.mark.parametrize("view", sorted(METRICS))
def test_vectors_written_by_feast_and_by_the_processor_read_back_and_are_searched(
    plain_store: FeatureStore, view: str
) -> None:
    kind = kind_of(plain_store)
    ids = [next(_IDS) for _ in range(40)]
    vecs = vectors(len(ids), seed=ids[0])
    push(plain_store, view, ids[:20], vecs[:20])
    sink_write(plain_store, view, ids[20:], vecs[20:])
    read = plain_store.get_online_features(
        features=[f"{view}:embedding", f"{view}:title"], entity_rows=[{"item_id": i} for i in ids]
    ).to_dict()
    assert [len(v or []) for v in read["embedding"]] == [DIM] * len(ids), read["embedding"]
    np.testing.assert_array_equal(np.array(read["embedding"], dtype=np.float32), vecs)
    assert read["title"] == [f"item {i}" for i in ids]
    query = vectors(1, seed=-ids[0] % 1000)[0]
    if kind.vectors is None:  # no vector search in this store (Feast's Redis): a clear refusal
        with pytest.raises(Exception):  # noqa: B017 - whatever Feast's store raises, it must not answer
            plain_store.retrieve_online_documents_v2(
                features=[f"{view}:title"], query=query.tolist(), top_k=5
            ).to_dict()
        return
    # The oracle: every vector of this test (and of earlier ones in the namespace: the store holds them all).
    answer = plain_store.retrieve_online_documents_v2(
        features=[f"{view}:title", f"{view}:embedding"], query=query.tolist(), top_k=5, distance_metric=None
    ).to_dict()
    got = sorted(zip(answer["distance"], answer["item_id"], strict=True))
    held = plain_store.get_online_features(
        features=[f"{view}:embedding"], entity_rows=[{"item_id": i} for i in range(1, ids[-1] + 1)]
    ).to_dict()
    known = [(i, v) for i, v in zip(held["item_id"], held["embedding"], strict=True) if v]
    near = distances(np.array([v for _, v in known], dtype=np.float32), query.tolist(), METRICS[view])
    expected = sorted(zip(near.tolist(), (i for i, _ in known), strict=True))[:5]
    assert [i for _, i in got] == [i for _, i in expected], (got, expected)
    np.testing.assert_allclose([d for d, _ in got], [d for d, _ in expected], rtol=1e-4, atol=1e-5)


def test_a_plain_vector_field_needs_no_tags_but_half_tags_are_refused() -> None:
    from feast import Entity, FeatureView, Field, ValueType
    from feast.types import Array, Float32, Int64

    from core.errors import ConfigError

    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    fields = [Field(name="item_id", dtype=Int64), Field(name="v", dtype=Array(Float32), vector_index=True, vector_length=8)]
    plain = FeatureView(name="p", entities=[item], schema=fields, ttl=timedelta(0))
    assert spec_for(plain) is None and vector_field(plain) is not None
    half = FeatureView(
        name="h", entities=[item], schema=fields, ttl=timedelta(0), tags={"embedding.model": "m"}
    )
    with pytest.raises(ConfigError, match=r"has no tag embedding\.text"):
        spec_for(half)
