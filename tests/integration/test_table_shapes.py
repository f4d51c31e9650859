"""Tables as data engineers have them: uuid, text and composite keys, partitioned tables, generated columns,
each wired only through the documented steps, repaired by `featurectl verify --repair` at scale."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors.deploy import deploy, remove
from jobs.snapshot import _request, key_filters
from streams.sinks.base import UPSERT, SinkRow
from streams.sinks.online import open_online_sink
from streams.store import feast_apply
from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, unique, wait_until
from tests.integration.platform import Platform, make_platform

VIEWS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

listing = Entity(name="listing", join_keys=["listing_id"], value_type=ValueType.STRING)
shop = Entity(name="shop", join_keys=["shop_code"], value_type=ValueType.STRING)
sku = Entity(name="sku", join_keys=["sku_id"], value_type=ValueType.INT64)


def history(name):
    return FileSource(name=f"{name}_history", path=f"data/offline/{name}",
                      timestamp_field="event_timestamp", created_timestamp_column="ingested_at")


listing_features = FeatureView(
    name="listing_features", entities=[listing], ttl=timedelta(0),
    schema=[Field(name="listing_id", dtype=String), Field(name="title", dtype=String),
            Field(name="price", dtype=Float64)],
    source=PushSource(name="listing_push", batch_source=history("listing_features")),
    tags={"cdc.table": "public.LISTINGS", "cdc.key": "listing_id=id"},
)

stock_features = FeatureView(
    name="stock_features", entities=[shop, sku], ttl=timedelta(0),
    schema=[Field(name="shop_code", dtype=String), Field(name="sku_id", dtype=Int64),
            Field(name="title", dtype=String), Field(name="qty", dtype=Int64)],
    source=PushSource(name="stock_push", batch_source=history("stock_features")),
    tags={"cdc.table": "public.STOCK", "cdc.key": "shop_code=shop,sku_id=sku"},
)
"""
SUITE = '{{"name": "{}", "expectations": [{{"type": "expect_column_values_to_not_be_null", "kwargs": {{"column": "title"}}}}]}}'
ROWS = 300


@dataclass
class Shapes:
    platform: Platform
    listings: str
    stock: str
    listing_ids: list[str]
    stock_keys: list[tuple[str, int]]


@pytest.fixture
def shapes(stack: StackHandle, tmp_path: Path) -> Iterator[Shapes]:
    """A uuid-keyed and a composite-keyed table, with views, a connector (with signals) and a processor."""
    name = unique("ks")
    suffix = name.split("_", 1)[1]
    listings, stock = f"listings_{suffix}", f"stock_{suffix}"
    listing_ids = [str(uuid.uuid4()) for _ in range(ROWS)]
    # Shop codes with quotes and non-ASCII: the filters must quote them right.
    stock_keys = [(f"shop-{i % 7}'s ü", i) for i in range(ROWS)]
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {listings} (id uuid PRIMARY KEY, title text NOT NULL, price numeric)")
        conn.execute(
            f"CREATE TABLE {stock} (shop text, sku bigint, title text NOT NULL, qty int, PRIMARY KEY (shop, sku))"
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {listings} VALUES (%s, %s, %s)",
                [(lid, f"listing {i}", i * 1.25) for i, lid in enumerate(listing_ids)],
            )
            cur.executemany(
                f"INSERT INTO {stock} VALUES (%s, %s, %s, %s)",
                [(s, k, f"stock {k}", k % 13) for s, k in stock_keys],
            )
    plat = make_platform(
        stack.settings,
        stack.admin,
        tmp_path,
        name,
        signals=True,
        tables=(f"public.{listings}", f"public.{stock}"),
    )
    (plat.repo / "shapes.py").write_text(VIEWS.replace("LISTINGS", listings).replace("STOCK", stock))
    for view in ("listing_features", "stock_features"):
        (plat.suites / f"{view}.json").write_text(SUITE.format(view))
    deploy(stack.settings, plat.definition, timeout_s=120)
    feast_apply(plat.repo)
    plat.start_processor()
    yield Shapes(plat, listings, stock, listing_ids, stock_keys)
    plat.stop_all()
    remove(stack.settings, plat.definition)
    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}, {}").format(sql.Identifier(listings), sql.Identifier(stock)))


def titles(plat: Platform, view: str, rows: list[dict[str, Any]]) -> list[Any]:
    got = plat.store().get_online_features(features=[f"{view}:title"], entity_rows=rows).to_dict()
    return list(got["title"])


def plant_wrong_titles(
    plat: Platform, view: str, rows: list[dict[str, Any]], features: dict[str, Any]
) -> None:
    """Overwrite entities' online state with a wrong title, under their stored versions."""
    sink = open_online_sink(plat.store())
    try:
        stored = sink.stored_orders(view, rows)
        now = datetime.now(UTC)
        sink.add(
            [
                SinkRow(view, UPSERT, keys, features, now, order[0], "u", "planted", None, order[1])
                for keys, order in zip(rows, stored, strict=True)
                if order is not None
            ]
        )
        sink.flush()
    finally:
        sink.close()


def test_verify_repair_fixes_hundreds_of_uuid_and_composite_keyed_entities(shapes: Shapes) -> None:
    plat = shapes.platform
    listing_rows = [{"listing_id": lid} for lid in shapes.listing_ids]
    stock_rows = [{"shop_code": s, "sku_id": k} for s, k in shapes.stock_keys]
    wait_until(lambda: None not in titles(plat, "listing_features", listing_rows), 120, "listings online")
    wait_until(lambda: None not in titles(plat, "stock_features", stock_rows), 120, "stock online")

    wrong_listings, wrong_stock = listing_rows[:250], stock_rows[:250]
    plant_wrong_titles(plat, "listing_features", wrong_listings, {"title": "wrong", "price": 0.0})
    plant_wrong_titles(plat, "stock_features", wrong_stock, {"title": "wrong", "qty": 0})
    assert titles(plat, "listing_features", wrong_listings) == ["wrong"] * 250

    args = ["verify", "listing_features", "stock_features", "--file", str(plat.definition.path)]
    caught = cli(*args, env=plat.env)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert f"listing_features (public.{shapes.listings}): {ROWS} rows, 250 mismatches" in caught.stdout
    assert f"stock_features (public.{shapes.stock}): {ROWS} rows, 250 mismatches" in caught.stdout

    repaired = cli(*args, "--repair", "--wait", "240", env=plat.env, timeout=600)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count("after repair: 0 mismatches") == 2, repaired.stdout
    assert titles(plat, "listing_features", wrong_listings) == [f"listing {i}" for i in range(250)]
    assert titles(plat, "stock_features", wrong_stock) == [f"stock {k}" for _, k in shapes.stock_keys[:250]]


def test_key_filters_fit_a_documented_2048_character_signal_table_and_select_exactly_the_keys(
    stack: StackHandle, shapes: Shapes
) -> None:
    """A user's signal table as Debezium documents it (varchar(2048)): the keys are split into as many
    signals as needed, each within the column, together selecting exactly the keys asked for."""
    plat = shapes.platform
    narrow_table = f"cdc.signal_{plat.name.split('_', 1)[1]}"
    narrow = dataclasses.replace(
        plat.definition, config={**plat.definition.config, "signal.data.collection": narrow_table}
    )
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {narrow_table} (id varchar(42) PRIMARY KEY, type varchar(32), data varchar(2048))"
        )
    try:
        for table, columns, keys in (
            (shapes.listings, ["id"], [(k,) for k in shapes.listing_ids]),
            (shapes.stock, ["shop", "sku"], shapes.stock_keys),
        ):
            filters = key_filters(
                stack.stack.postgres.app_conninfo(), narrow, f"public.{table}", columns, keys
            )
            assert len(filters) > 1
            selected: list[tuple[Any, ...]] = []
            with psycopg.connect(stack.app) as conn:
                for condition in filters:
                    assert len(_request([f"public.{table}"], {f"public.{table}": condition})) <= 2048
                    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
                    query = sql.SQL("SELECT {} FROM {} WHERE ").format(cols, sql.Identifier(table))
                    selected += conn.execute(query + sql.SQL(condition)).fetchall()
            assert sorted(
                tuple(str(v) if isinstance(v, uuid.UUID) else v for v in r) for r in selected
            ) == sorted(keys)
    finally:
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {narrow_table}")
