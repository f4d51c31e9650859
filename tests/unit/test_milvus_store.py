"""What the Milvus online store adds to the store contract (test_sinks.py, test_vector_store.py run on it too):
values read back as written, NULL included; a changed declaration keeps the entities; `stack up` starts
milvus-lite when feature_store.yaml asks for it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from feast import FeatureStore, Field
from feast.types import Int64

from core.settings import load_settings
from stack.launcher import LocalStack, _declared_servers
from stores.registry import open_online_sink
from stores.sink import UPSERT, SinkRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEATURES = ["name", "description", "category", "price", "in_stock", "tags"]


def product(pid: int, version: int, **features: object) -> SinkRow:
    return SinkRow(
        "product_details", UPSERT, {"product_id": pid}, features, T0, version, "c", f"t[0] offset={version}"
    )


def read(store: FeatureStore, *ids: int) -> dict[str, list[object]]:
    return store.get_online_features(
        features=[f"product_details:{f}" for f in FEATURES], entity_rows=[{"product_id": i} for i in ids]
    ).to_dict()


def test_every_type_reads_back_as_written_and_null_as_null(milvus_store: FeatureStore) -> None:
    """Feast's own Milvus store writes a NULL as "" or 0 and cannot read a NULL Float64 back at all."""
    sink = open_online_sink(milvus_store)
    sink.add(
        [
            product(1, 10, name="boots", description="waterproof", category="shoes", price=89.5, in_stock=True,
                    tags=["outdoor", "leather"]),
            product(2, 11, name=None, description=None, category=None, price=None, in_stock=None, tags=None),
            product(3, 12, name="", description="x", category="c", price=0.0, in_stock=False, tags=[]),
        ]
    )  # fmt: skip
    assert len(sink.flush()) == 3
    sink.close()
    got = read(milvus_store, 1, 2, 3, 4)
    assert got["name"] == ["boots", None, "", None]
    assert got["price"] == [89.5, None, 0.0, None]
    assert got["in_stock"] == [True, None, False, None]
    assert got["tags"][0] == ["outdoor", "leather"] and got["tags"][1] is None and got["tags"][3] is None


def test_a_changed_declaration_keeps_every_entity_and_its_remaining_values(
    milvus_store: FeatureStore,
) -> None:
    sink = open_online_sink(milvus_store)
    sink.add(
        [
            product(
                1, 10, name="boots", description="d", category="shoes", price=89.5, in_stock=True, tags=["a"]
            )
        ]
    )
    sink.flush()
    sink.close()
    view = milvus_store.get_feature_view("product_details")
    original = list(view.features)
    try:
        view.features = [f for f in original if f.name != "category"] + [
            Field(name="stock_level", dtype=Int64)
        ]
        milvus_store.apply([view])  # feast apply: the collection is rebuilt for the new declaration
        got = milvus_store.get_online_features(
            features=["product_details:name", "product_details:price", "product_details:stock_level"],
            entity_rows=[{"product_id": 1}],
        ).to_dict()
        assert got == {"product_id": [1], "name": ["boots"], "price": [89.5], "stock_level": [None]}
        after = open_online_sink(milvus_store)
        after.add(
            [
                product(
                    1, 11, name="boots", description="d", price=90.0, in_stock=True, tags=["a"], stock_level=3
                )
            ]
        )
        assert len(after.flush()) == 1  # the new feature is written, versions kept across the rebuild
        after.add(
            [product(1, 10, name="older", description="d", price=1.0, in_stock=True, tags=[], stock_level=0)]
        )
        assert after.flush() == []
        after.close()
    finally:
        view.features = original
        milvus_store.apply([view])


@pytest.mark.parametrize(
    ("online_store", "starts"),
    [
        ("type: stores.milvus.feast.MilvusOnlineStore\n  host: http://127.0.0.1\n  port: 29530", True),
        ("type: stores.milvus.feast.MilvusOnlineStore\n  uri: http://localhost:29530", True),
        ("type: stores.milvus.feast.MilvusOnlineStore\n  host: http://milvus.internal\n  port: 29530", False),
        ("type: stores.milvus.feast.MilvusOnlineStore\n  host: http://127.0.0.1", False),  # 19530: not ours
        ("type: stores.sqlite.feast.VecSqliteOnlineStore\n  path: data/online_store.db", False),
    ],
)
def test_stack_up_starts_milvus_lite_when_feature_store_yaml_declares_it_here(
    tmp_path: Path, online_store: str, starts: bool
) -> None:
    (tmp_path / "feature_store.yaml").write_text(f"project: shop\nonline_store:\n  {online_store}\n")
    settings = load_settings(feature_repo=tmp_path, data_dir=tmp_path / "data")
    assert ("milvus" in _declared_servers(settings)) is starts
    assert ("milvus" in LocalStack(settings).extras()) is starts
