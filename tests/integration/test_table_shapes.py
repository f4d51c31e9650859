"""Tables as data engineers have them: uuid, text and composite keys, partitioned tables, generated columns,
each wired only through the documented steps, repaired by `featurectl verify --repair` at scale."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors.deploy import deploy, remove
from jobs.snapshot import _request, key_filters, read_notifications
from monitoring.health import HealthCheck
from stores.registry import open_online_sink
from stores.repository import feast_apply
from stores.sink import UPSERT, SinkRow
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
PLANTED = [1, 2, 4, 40, 41, 80, 150, 299]  # rows of both partitions made wrong online before a snapshot
ROWS = 300  # composite-keyed rows, 250 of them planted wrong
LISTINGS = 10_000  # uuid-keyed rows, all planted wrong: one repair of 10,000 entities


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
    listing_ids = [str(uuid.uuid4()) for _ in range(LISTINGS)]
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

    wrong_listings, wrong_stock = listing_rows, stock_rows[:250]
    plant_wrong_titles(plat, "listing_features", wrong_listings, {"title": "wrong", "price": 0.0})
    plant_wrong_titles(plat, "stock_features", wrong_stock, {"title": "wrong", "qty": 0})
    assert titles(plat, "listing_features", wrong_listings) == ["wrong"] * LISTINGS

    args = ["verify", "listing_features", "stock_features", "--file", str(plat.definition.path)]
    caught = cli(*args, env=plat.env)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert (
        f"listing_features (public.{shapes.listings}): {LISTINGS} rows, {LISTINGS} mismatches"
        in caught.stdout
    )
    assert f"stock_features (public.{shapes.stock}): {ROWS} rows, 250 mismatches" in caught.stdout

    repaired = cli(*args, "--repair", "--wait", "240", env=plat.env, timeout=600)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count("after repair: 0 mismatches") == 2, repaired.stdout
    assert titles(plat, "listing_features", wrong_listings) == [f"listing {i}" for i in range(LISTINGS)]
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


EVENTS_VIEW = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

event = Entity(name="event", join_keys=["event_id"], value_type=ValueType.INT64)

event_features = FeatureView(
    name="event_features", entities=[event], ttl=timedelta(0),
    schema=[Field(name="event_id", dtype=Int64), Field(name="title", dtype=String),
            Field(name="amount", dtype=Float64), Field(name="FEATURE", dtype=String)],
    source=PushSource(name="event_push", batch_source=FileSource(
        name="event_history", path="data/offline/event_features",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.TABLE", "cdc.key": "event_id=id"},
)
"""


def drop_shop_views(plat: Platform) -> None:
    """The repo copy declares the shop's views too; this platform's connector captures only its table."""
    for module in ("customers.py", "orders.py", "products.py", "feature_services.py"):
        (plat.repo / module).unlink()


def one_table_platform(stack: StackHandle, tmp_path: Path, table: str, feature: str = "region") -> Platform:
    """A platform over ``table`` wired through the documented steps (publication by db init's code,
    connector deployed, views applied with the source check), with a running processor."""
    name = unique("sh")
    plat = make_platform(
        stack.settings, stack.admin, tmp_path, name, signals=True, tables=(f"public.{table}",)
    )
    drop_shop_views(plat)
    (plat.repo / "events.py").write_text(EVENTS_VIEW.replace("TABLE", table).replace("FEATURE", feature))
    (plat.suites / "event_features.json").write_text(SUITE.format("event_features"))
    deploy(stack.settings, plat.definition, timeout_s=120)
    applied = cli("feast-apply", "--file", str(plat.definition.path), env=plat.env, timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    plat.start_processor()
    return plat


def drop_platform(stack: StackHandle, plat: Platform, table: str) -> None:
    plat.stop_all()
    remove(stack.settings, plat.definition)
    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(plat.name)))
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))


def online_events(plat: Platform, ids: list[int], feature: str = "region") -> dict[int, tuple[Any, ...]]:
    got = plat.online("event_features", "event_id", ids, ["title", "amount", feature])
    return {
        i: (t, a, r)
        for i, t, a, r in zip(ids, got["title"], got["amount"], got[feature], strict=True)
        if t is not None
    }


def snapshot_replaces_planted_titles(plat: Platform, table: str, prefix: str) -> None:
    """`featurectl snapshot` really re-streams the table: wrong titles planted online are replaced."""
    plant_wrong_titles(plat, "event_features", [{"event_id": i} for i in PLANTED], {"title": "wrong"})
    args = ["snapshot", f"public.{table}", "--wait", "180", "--file", str(plat.definition.path)]
    snap = cli(*args, env=plat.env, timeout=300)
    assert snap.returncode == 0, snap.stdout + snap.stderr
    assert "completed" in snap.stdout
    # Debezium's COMPLETED means emitted; the processor applies the rows soon after, partition by partition.
    want = [f"{prefix} {i}" for i in PLANTED]
    wait_until(
        lambda: [online_events(plat, [i])[i][0] for i in PLANTED] == want, 60, "the snapshot's rows online"
    )


def test_a_partitioned_table_streams_snapshots_moves_rows_between_partitions_and_verifies_clean(
    stack: StackHandle, tmp_path: Path
) -> None:
    table = unique("events")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint, day date, title text NOT NULL, amount numeric, region text, "
            "PRIMARY KEY (id, day)) PARTITION BY RANGE (day)"
        )
        conn.execute(
            f"CREATE TABLE {table}_10 PARTITION OF {table} FOR VALUES FROM ('2026-10-01') TO ('2026-11-01')"
        )
        conn.execute(
            f"CREATE TABLE {table}_11 PARTITION OF {table} FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"
        )
        conn.execute(
            f"INSERT INTO {table} SELECT i, date '2026-10-01' + (i % 60), 'event ' || i, i * 0.5, 'r' || (i % 3) "
            "FROM generate_series(1, 400) i"
        )
    plat = one_table_platform(stack, tmp_path, table)
    try:
        ids = list(range(1, 402))
        wait_until(
            lambda: len(online_events(plat, ids)) == 400, 120, "the 400 events of both partitions online"
        )
        # The changes are named after the root, whatever partition holds the row.
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET amount = 999 WHERE id = 5")
            conn.execute(f"UPDATE {table} SET day = '2026-11-20', title = 'moved' WHERE id = 7")  # Oct -> Nov
            conn.execute(f"DELETE FROM {table} WHERE id = 9")
            conn.execute(f"INSERT INTO {table} VALUES (401, '2026-11-02', 'new', 1.5, 'r9')")
        want = {5: ("event 5", 999.0, "r2"), 7: ("moved", 3.5, "r1"), 401: ("new", 1.5, "r9")}
        wait_until(
            lambda: online_events(plat, [5, 7, 9, 401]) == want,
            120,
            "the update, the row moving partition, the delete and the insert online",
        )
        # A partition attached after capture started: its rows' changes arrive under the root too.
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE {table}_12 PARTITION OF {table} FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"
            )
            conn.execute(f"INSERT INTO {table} VALUES (402, '2026-12-24', 'december', 2.5, 'r0')")
        wait_until(lambda: 402 in online_events(plat, [402]), 120, "a row of a partition attached later")

        snapshot_replaces_planted_titles(plat, table, "event")

        verified = cli("verify", "event_features", "--file", str(plat.definition.path), env=plat.env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "401 rows, 0 mismatches" in verified.stdout

        health = cli("health", "--file", str(plat.definition.path), env=plat.env)
        assert f"OK    capture public.{table}" in health.stdout, health.stdout
        assert f"OK    snapshot public.{table}" in health.stdout, health.stdout

        # A detached partition's rows leave the root without a change event: verify finds, repair deletes.
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {table} DETACH PARTITION {table}_12")
        args = ["verify", "event_features", "--file", str(plat.definition.path)]
        found = cli(*args, env=plat.env)
        assert found.returncode == 1 and '{"event_id": 402}: not in Postgres' in found.stdout, found.stdout
        repaired = cli(*args, "--repair", "--wait", "120", env=plat.env, timeout=300)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert 402 not in online_events(plat, [402])
    finally:
        drop_platform(stack, plat, table)


def test_a_publication_without_the_root_setting_is_reported_with_its_fix(
    stack: StackHandle, tmp_path: Path
) -> None:
    from connectors.capture import capture_problems
    from stack.source_db import publication_steps

    table = unique("events")
    publication = unique("pub")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint, day date, title text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)"
        )
        conn.execute(
            f"CREATE TABLE {table}_10 PARTITION OF {table} FOR VALUES FROM ('2026-10-01') TO ('2026-11-01')"
        )
    definition = make_platform(stack.settings, stack.admin, tmp_path, unique("pr")).definition
    definition = dataclasses.replace(
        definition,
        config={
            **definition.config,
            "publication.name": publication,
            "table.include.list": f"public.{table}",
        },
    )
    fix = f"ALTER PUBLICATION {publication} SET (publish_via_partition_root = true)".replace(
        publication, f'"{publication}"'
    )
    try:
        with psycopg.connect(stack.admin, autocommit=True) as conn:
            conn.execute(f"CREATE PUBLICATION {publication} FOR TABLE {table}")  # as the README used to say
            problems = capture_problems(conn, definition, {f"public.{table}": {"id", "title"}})
            assert [p.fix for p in problems] == [fix], problems
            assert "publishes its changes under the partitions' names" in problems[0].problem
            # db init (and its --dry-run) reports it with the fix, and does not change what others read...
            steps, warnings = publication_steps(conn, definition)
            assert steps == [] and any(fix in w for w in warnings), warnings
            # ...and adding the partitioned table to a publication also switches it to the root.
            conn.execute(f"ALTER PUBLICATION {publication} DROP TABLE {table}")
            steps, _ = publication_steps(conn, definition)
            for step in steps:
                conn.execute(step.statement)
            assert capture_problems(conn, definition, {f"public.{table}": {"id", "title"}}) == []
            # Membership is the table added, not its leaves: a second run adds nothing.
            assert publication_steps(conn, definition)[0] == []
    finally:
        with psycopg.connect(stack.admin, autocommit=True) as conn:
            conn.execute(f"DROP PUBLICATION IF EXISTS {publication}")
            conn.execute(f"DROP TABLE {table} CASCADE")


def test_a_table_with_a_generated_column_is_captured_snapshotted_and_verified(
    stack: StackHandle, tmp_path: Path
) -> None:
    table = unique("accounts")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, title text NOT NULL, amount numeric, region text, "
            "title_len int GENERATED ALWAYS AS (length(title)) STORED)"
        )
        conn.execute(
            f"INSERT INTO {table} (id, title, amount, region) SELECT i, 'acct ' || i, i, 'r' FROM generate_series(1, 300) i"
        )
    # A feature bound to the generated column is refused, naming the column and why.
    refused_root = tmp_path / "refused"
    refused_root.mkdir()
    name = unique("gr")
    refused = make_platform(
        stack.settings, stack.admin, refused_root, name, signals=True, tables=(f"public.{table}",)
    )
    drop_shop_views(refused)
    (refused.repo / "events.py").write_text(
        EVENTS_VIEW.replace("TABLE", table)
        .replace("FEATURE", "title_len")
        .replace('Field(name="title_len", dtype=String)', 'Field(name="title_len", dtype=Int64)')
    )
    (refused.suites / "event_features.json").write_text(SUITE.format("event_features"))
    out = cli("feast-apply", "--file", str(refused.definition.path), env=refused.env, timeout=300)
    assert out.returncode != 0
    assert f"public.{table}.title_len is a generated column" in out.stderr + out.stdout
    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))

    plat = one_table_platform(stack, tmp_path, table)
    try:
        ids = list(range(1, 301))
        wait_until(lambda: len(online_events(plat, ids)) == 300, 120, "300 accounts online")
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET title = 'renamed' WHERE id = 3")
        wait_until(lambda: online_events(plat, [3]).get(3, ("",))[0] == "renamed", 60, "the update online")
        snapshot_replaces_planted_titles(plat, table, "acct")
        verified = cli("verify", "event_features", "--file", str(plat.definition.path), env=plat.env)
        assert verified.returncode == 0 and "300 rows, 0 mismatches" in verified.stdout, (
            verified.stdout + verified.stderr
        )
    finally:
        drop_platform(stack, plat, table)


def test_a_snapshot_debezium_skips_fails_fast_naming_the_table_and_a_later_one_completes(
    stack: StackHandle, tmp_path: Path
) -> None:
    keyless, keyed = unique("nokey"), unique("keyed")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {keyless} (id bigint, title text)")
        conn.execute(f"ALTER TABLE {keyless} REPLICA IDENTITY FULL")
        conn.execute(f"INSERT INTO {keyless} SELECT i, 'x' FROM generate_series(1, 50) i")
        conn.execute(f"CREATE TABLE {keyed} (id bigint PRIMARY KEY, title text)")
        conn.execute(f"INSERT INTO {keyed} SELECT i, 'y' FROM generate_series(1, 50) i")
    name = unique("sk")
    plat = make_platform(
        stack.settings,
        stack.admin,
        tmp_path,
        name,
        signals=True,
        tables=(f"public.{keyless}", f"public.{keyed}"),
    )
    deploy(stack.settings, plat.definition, timeout_s=120)
    try:
        args = ["--wait", "120", "--file", str(plat.definition.path)]
        failed = cli("snapshot", f"public.{keyless}", *args, env=plat.env, timeout=200)
        assert failed.returncode != 0, failed.stdout + failed.stderr
        assert "completed" not in failed.stdout
        assert f"public.{keyless}" in failed.stderr, failed.stderr

        # A stall: the chunk query waits behind a lock, Debezium reports nothing; the command stops it.
        locker = psycopg.connect(stack.app)
        try:
            locker.execute(f"LOCK TABLE {keyed} IN ACCESS EXCLUSIVE MODE")
            began = time.monotonic()
            stalled = cli("snapshot", f"public.{keyed}", *args, "--stall", "15", env=plat.env, timeout=200)
            assert stalled.returncode != 0 and "stalled" in stalled.stderr, stalled.stdout + stalled.stderr
            assert time.monotonic() - began < 90, "a stall must fail long before --wait runs out"
        finally:
            locker.rollback()
            locker.close()

        ok = cli("snapshot", f"public.{keyed}", *args, env=plat.env, timeout=200)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "completed" in ok.stdout

        # `health` reads the same notifications: the skipped table fails its check, the other passes.
        health = HealthCheck(
            plat.settings,
            plat.definition,
            [],
            stack.app,
            sources={f"public.{keyless}": {"title"}, f"public.{keyed}": {"title"}},
        )
        checks = {c.name: c for c in health._snapshots()}
        skipped = checks[f"snapshot public.{keyless}"]
        assert skipped.status == "fail" and "NO_PRIMARY_KEY" in skipped.summary, skipped
        assert f"featurectl snapshot public.{keyless}" in (skipped.action or "")
        notes = read_notifications(
            plat.settings.kafka_client(), plat.definition.config["notification.sink.topic.name"]
        )
        assert checks[f"snapshot public.{keyed}"].status == "ok", (
            f"{checks[f'snapshot public.{keyed}']}\n{ok.stderr}\n" + "\n".join(json.dumps(n) for n in notes)
        )
    finally:
        remove(stack.settings, plat.definition)
        with psycopg.connect(stack.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {keyless}, {keyed}")


@pytest.mark.parametrize("identity", ["FULL", "USING INDEX"])
def test_a_table_without_a_primary_key_streams_inserts_updates_and_deletes(
    stack: StackHandle, tmp_path: Path, identity: str
) -> None:
    table = unique("nopk")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint NOT NULL, title text NOT NULL, amount numeric, region text)"
        )
        conn.execute(f"CREATE UNIQUE INDEX {table}_id ON {table} (id)")
        replica = f"USING INDEX {table}_id" if identity == "USING INDEX" else "FULL"
        conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY {replica}")
        conn.execute(f"INSERT INTO {table} SELECT i, 'row ' || i, i, 'r' FROM generate_series(1, 50) i")
    plat = one_table_platform(stack, tmp_path, table)
    try:
        wait_until(lambda: len(online_events(plat, list(range(1, 51)))) == 50, 120, "50 rows online")
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET title = 'changed' WHERE id = 2")
            conn.execute(f"DELETE FROM {table} WHERE id = 3")
            conn.execute(f"INSERT INTO {table} VALUES (51, 'new', 5, 'r')")
        want = {1: ("row 1", 1.0, "r"), 2: ("changed", 2.0, "r"), 51: ("new", 5.0, "r")}
        wait_until(
            lambda: online_events(plat, [1, 2, 3, 51]) == want, 120, "the update, delete and insert online"
        )
        assert not plat.dead_letters()
    finally:
        drop_platform(stack, plat, table)


@pytest.mark.parametrize("identity", ["DEFAULT", "NOTHING"])
def test_a_table_without_a_replica_identity_is_never_published_and_reported_with_its_fix(
    stack: StackHandle, tmp_path: Path, identity: str
) -> None:
    from connectors.capture import capture_problems
    from core.errors import ConfigError
    from stack.source_db import publication_steps

    table, publication = unique("noid"), unique("pub")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigint, title text)")
        conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY {identity}")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    definition = make_platform(stack.settings, stack.admin, tmp_path, unique("ni")).definition
    definition = dataclasses.replace(
        definition,
        config={
            **definition.config,
            "publication.name": publication,
            "table.include.list": f"public.{table}",
        },
    )
    try:
        with psycopg.connect(stack.admin, autocommit=True) as conn:
            with pytest.raises(ConfigError, match="REPLICA IDENTITY FULL"):
                publication_steps(conn, definition)
            # What db init spares the application: published anyway, Postgres refuses its updates.
            conn.execute(f"CREATE PUBLICATION {publication} FOR TABLE {table}")
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="replica identity"):
                conn.execute(f"UPDATE {table} SET title = 'b'")
            problems = capture_problems(
                conn, definition, {f"public.{table}": {"id", "title"}}, {f"public.{table}": {"id"}}
            )
            assert len(problems) == 1 and "refuses every UPDATE and DELETE" in problems[0].problem, problems
            assert problems[0].fix.startswith(f'ALTER TABLE "public"."{table}" REPLICA IDENTITY FULL')
            # A delete that would not carry the view's key is reported too.
            conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
            conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY DEFAULT")
            problems = capture_problems(
                conn, definition, {f"public.{table}": {"title"}}, {f"public.{table}": {"title"}}
            )
            assert len(problems) == 1 and "not the views' key column(s) title" in problems[0].problem, (
                problems
            )
    finally:
        with psycopg.connect(stack.admin, autocommit=True) as conn:
            conn.execute(f"DROP PUBLICATION IF EXISTS {publication}")
            conn.execute(f"DROP TABLE {table}")


SHAPE_COLUMNS = (
    "id bigint PRIMARY KEY, c_domain DOMAIN, c_interval interval, c_timetz timetz, c_money money, "
    "c_range int4range, c_tsrange tstzrange, c_hstore hstore, c_citext citext, c_ts timestamp, "
    "c_tstz timestamptz, c_date date, c_arr int[], c_long text, c_num numeric"
)
SHAPE_FEATURES = {
    "c_domain": "Int64", "c_interval": "String", "c_timetz": "String", "c_money": "String",
    "c_range": "String", "c_tsrange": "String", "c_hstore": "String", "c_citext": "String",
    "c_ts": "UnixTimestamp", "c_tstz": "UnixTimestamp", "c_date": "UnixTimestamp",
    "c_arr": "Array(Int64)", "c_long": "String", "c_num": "Float64",
}  # fmt: skip
LONG = "ü😀" * 50_000
SHAPE_ROWS = [
    "(1, 5, '1 year 2 months 3 days 04:05:06.5', '10:15:30+02', 12.34, '[1,5)', '[2026-01-01,2026-02-01)', "
    f"'a=>1,b=>NULL', 'MiXeD', '2026-01-01', '2026-01-01 00:00:00+00', '2026-01-01', ARRAY[1,2], '{LONG}', "
    "'Infinity')",
    "(2, 1, '-1 day', '00:00:00-12', -0.5, 'empty', '(,)', '', 'x', '9999-12-31 23:59:59', "
    "'0001-01-01 00:00:00+00', '0001-01-01', ARRAY[]::int[], '', '-Infinity')",
    # Each of these holds one value no Feast feature can: a dead letter naming the column and the fix.
    "(3, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ARRAY[1,NULL,3], NULL, NULL)",
    "(4, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'infinity', NULL, NULL, NULL, NULL, NULL)",
    "(5, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '294276-12-31 23:59:59+00', NULL, NULL, NULL, NULL)",
    "(6, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'infinity', NULL, NULL, NULL)",
]
SHAPE_EXPECTED = {
    "c_domain": [5, 1],
    "c_interval": ["P1Y2M3DT4H5M6.5S", "P0Y0M-1DT0H0M0S"],  # interval.handling.mode=string: ISO 8601
    "c_timetz": ["08:15:30Z", "12:00:00Z"],  # Debezium gives a timetz in UTC
    "c_money": ["12.34", "-0.50"],
    "c_range": ["[1,5)", "empty"],
    "c_tsrange": ['["2026-01-01 00:00:00+00","2026-02-01 00:00:00+00")', "(,)"],
    "c_hstore": ['{"a":"1","b":null}', "{}"],  # hstore.handling.mode=json
    "c_citext": ["MiXeD", "x"],
    "c_ts": [datetime(2026, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)],
    "c_tstz": [datetime(2026, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)],
    "c_date": [datetime(2026, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)],
    "c_arr": [[1, 2], []],
    "c_long": [LONG, ""],
    "c_num": [float("inf"), float("-inf")],
}
MISFITS = {
    3: ("c_arr", "NULL"),
    4: ("c_ts", "year 9999"),
    5: ("c_tstz", "year 9999"),
    6: ("c_date", "infinity"),
}


def test_every_postgres_shape_is_right_online_or_a_dead_letter_naming_the_column_and_the_fix(
    stack: StackHandle, capture: Any, tmp_path: Path
) -> None:
    """Domains, interval, timetz, money, ranges, hstore, citext, very long unicode and numeric infinities land
    exactly; what no Feast feature can hold (a NULL list element: Feast would serve 0; infinite or year >
    9999 timestamps) is dead-lettered by the stream and the backfill alike, naming the column and the fix."""
    from tests.integration.test_consistency import EVERY_VIEW, every_history, same_bytes

    domain = unique("posint")
    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hstore; CREATE EXTENSION IF NOT EXISTS citext")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DOMAIN {} AS integer CHECK (VALUE > 0)").format(sql.Identifier(domain)))
    cap = capture({"every": SHAPE_COLUMNS.replace("DOMAIN", f'"{domain}"')}, deploy_now=False)
    table = cap.table("every")
    plat = make_platform(
        stack.settings, stack.admin, tmp_path, cap.definition.name, tables=(f"public.{table}",)
    )
    plat.definition = cap.definition
    fields = ", ".join(f'Field(name="{n}", dtype={t})' for n, t in SHAPE_FEATURES.items())
    (plat.repo / "every.py").write_text(EVERY_VIEW.replace("TABLE", table).replace("FIELDS", fields))
    (plat.suites / "every_features.json").write_text('{"name": "every_features", "expectations": []}')
    feast_apply(plat.repo)
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES ").format(sql.Identifier(table)) + sql.SQL(", ".join(SHAPE_ROWS))
        )

    backfilled = cli("backfill", "every_features", env=plat.env, timeout=300)
    assert "6 rows read, 2 written" in backfilled.stdout, backfilled.stdout + backfilled.stderr
    deploy(stack.settings, cap.definition, timeout_s=120)
    plat.start_processor()
    try:
        ids = list(range(1, 7))

        def streamed() -> dict[str, list[Any]] | None:
            got = plat.online("every_features", "every_id", ids, list(SHAPE_FEATURES))
            return got if got["c_domain"][:2] == [5, 1] and len(plat.dead_letters()) >= 8 else None

        got = wait_until(streamed, 120, "rows 1-2 online and rows 3-6 dead-lettered by backfill and stream")
        for name, want in SHAPE_EXPECTED.items():
            assert got[name][:2] == want, name
            assert got[name][2:] == [None] * 4, name
        letters = plat.dead_letters()
        assert len(letters) == 8, [(d.key, d.reason[:80]) for d in letters]
        for rid, (column, why) in MISFITS.items():
            mine = [d for d in letters if d.key and json.loads(d.key).get("id") == rid]
            assert len(mine) == 2, (rid, [(d.key, d.reason[:80]) for d in letters])  # backfill and stream
            for d in mine:
                assert f"fits_feature_type({column})" in d.reason and why in d.reason and "fix:" in d.reason

        # The history: the backfill wrote the same rows as the stream, byte for byte.
        def history() -> dict[str, dict[int, dict[str, Any]]] | None:
            h = every_history(plat)
            return h if len(h.get("r", {})) == 2 else None

        rows = wait_until(history, 60, "the streamed history")
        assert set(rows["b"]) == set(rows["r"]) == {1, 2}
        for rid in (1, 2):
            diffs = [n for n in SHAPE_FEATURES if not same_bytes(rows["r"][rid][n], rows["b"][rid][n])]
            assert not diffs, (rid, {n: (rows["r"][rid][n], rows["b"][rid][n]) for n in diffs})
    finally:
        plat.stop_all()


def test_a_column_renamed_while_captured_dead_letters_its_rows_instead_of_writing_null(
    stack: StackHandle, tmp_path: Path
) -> None:
    table = unique("renamed")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, title text NOT NULL, amount numeric, region text)"
        )
        conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'one', 1, 'north'), (2, 'two', 2, 'south')")
    plat = one_table_platform(stack, tmp_path, table)
    try:
        wait_until(lambda: len(online_events(plat, [1, 2])) == 2, 120, "both rows online")
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN region TO area")
            conn.execute(f"UPDATE {table} SET title = 'one again' WHERE id = 1")
            conn.execute(f"UPDATE {table} SET amount = 20 WHERE id = 2")  # also after the rename
        letters = wait_until(
            lambda: [d for d in plat.dead_letters() if d.kind == "schema"] or None, 60, "dead letters"
        )
        wait_until(
            lambda: len([d for d in plat.dead_letters() if d.kind == "schema"]) == 2, 60, "both rows' letters"
        )
        assert all(f"column(s) region of public.{table} are not in the row" in d.reason for d in letters)
        # Never a NULL written for the renamed column: the entities keep their last right state.
        assert online_events(plat, [1, 2]) == {1: ("one", 1.0, "north"), 2: ("two", 2.0, "south")}
    finally:
        drop_platform(stack, plat, table)


DAY_VIEW = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

event = Entity(name="event", join_keys=["event_id"], value_type=ValueType.INT64)
day = Entity(name="day", join_keys=["day"], value_type=ValueType.STRING)

account_events = FeatureView(
    name="account_events", entities=[event, day], ttl=timedelta(0),
    schema=[Field(name="event_id", dtype=Int64), Field(name="day", dtype=String),
            Field(name="title", dtype=String), Field(name="amount", dtype=Float64)],
    source=PushSource(name="account_events_push", batch_source=FileSource(
        name="account_events_history", path="data/offline/account_events",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.TABLE", "cdc.key": "KEY"},
)
"""
EVENTS = 100_000  # one repair of 100,000 entities keyed by (bigint, date)


def test_a_table_keyed_by_bigint_and_date_is_served_by_the_date_and_repaired_at_100k(
    stack: StackHandle, tmp_path: Path
) -> None:
    """The README's "Adding a table" steps on a range-partitioned table keyed by (event_id bigint, day date): the
    declaration without the date's cast is refused with the one to write; with it, every row is served under
    the date as clients write it (2026-10-15, not Debezium's 2026-10-15Z), snapshotted and streamed; verify is
    clean; then 100,000 planted wrong entities and keys stored in the old form are repaired by one
    `verify --repair`, in chunked queries (a list of 100,000 row literals exhausts Postgres's stack)."""
    table = unique("acct")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint, day date, title text NOT NULL, amount numeric, "
            "PRIMARY KEY (id, day)) PARTITION BY RANGE (day)"
        )
        for lo, hi in (("2026-01-01", "2026-07-01"), ("2026-07-01", "2027-01-01")):
            conn.execute(
                f"CREATE TABLE {table}_{lo[5:7]} PARTITION OF {table} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            )
        conn.execute(
            f"INSERT INTO {table} SELECT i, date '2026-01-01' + (i % 365), 'event ' || i, i * 0.5 "
            f"FROM generate_series(1, {EVENTS}) i"
        )
    name = unique("dk")
    plat = make_platform(
        stack.settings, stack.admin, tmp_path, name, signals=True, tables=(f"public.{table}",)
    )
    try:
        drop_shop_views(plat)
        views = plat.repo / "events.py"
        (plat.suites / "account_events.json").write_text(SUITE.format("account_events"))
        deploy(stack.settings, plat.definition, timeout_s=120)
        apply = ["feast-apply", "--file", str(plat.definition.path)]
        views.write_text(DAY_VIEW.replace("TABLE", table).replace("KEY", "event_id=id,day=day"))
        refused = cli(*apply, env=plat.env, timeout=300)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"key column public.{table}.day is a date column" in refused.stderr, refused.stderr
        assert "fix: set cdc.key='event_id=id,day=day::date'" in refused.stderr, refused.stderr
        views.write_text(DAY_VIEW.replace("TABLE", table).replace("KEY", "event_id=id,day=day::date"))
        applied = cli(*apply, env=plat.env, timeout=300)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        plat.start_processor()

        def titles(keys: list[tuple[int, str]]) -> list[Any]:
            rows = [{"event_id": i, "day": d} for i, d in keys]
            got = plat.store().get_online_features(features=["account_events:title"], entity_rows=rows)
            return list(got.to_dict()["title"])

        def day_of(i: int) -> str:
            return (datetime(2026, 1, 1) + timedelta(days=i % 365)).date().isoformat()

        sample = [(i, day_of(i)) for i in (1, 2, 180, 181, 364, 365, EVENTS)]
        topic = plat.topic(f"public.{table}")
        wait_until(lambda: plat.caught_up([topic], EVENTS), 300, "the snapshot's 100,000 rows applied")
        assert titles(sample) == [f"event {i}" for i, _ in sample]  # the day as clients write it
        assert titles([(1, day_of(1) + "Z")]) == [None]
        with psycopg.connect(stack.app, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET title = 'streamed' WHERE id = 2")
            conn.execute(f"INSERT INTO {table} VALUES (0, '2026-10-15', 'new', 1)")
        wait_until(lambda: titles([(2, day_of(2)), (0, "2026-10-15")]) == ["streamed", "new"], 120, "changes")

        args = ["verify", "account_events", "--file", str(plat.definition.path)]
        clean = cli(*args, env=plat.env, timeout=600)
        assert clean.returncode == 0 and f"{EVENTS + 1} rows, 0 mismatches" in clean.stdout, clean.stdout

        # Every entity wrong, and three rows under the keys Debezium's text made before the cast was declared.
        planted = [{"event_id": i, "day": day_of(i)} for i in range(1, EVENTS + 1)]
        plant_wrong_titles(plat, "account_events", planted, {"title": "wrong"})
        sink = open_online_sink(plat.store())
        try:
            old = [{"event_id": i, "day": day_of(i) + "Z"} for i in (3, 4, 5)]
            now = datetime.now(UTC)
            sink.add(
                [SinkRow("account_events", UPSERT, k, {"title": "old"}, now, 1, "r", "old") for k in old]
            )
            sink.flush()
        finally:
            sink.close()
        found = cli(*args, "--show", "3", env=plat.env, timeout=600)
        assert found.returncode == 1
        assert f"{EVENTS + 1} rows, {EVENTS + 3} mismatches" in found.stdout, found.stdout
        old_line = next(line for line in found.stdout.splitlines() if ": not in Postgres: " in line)
        assert "Debezium's text, not the key clients ask with" in old_line, found.stdout

        started = time.monotonic()
        repaired = cli(*args, "--repair", "--wait", "600", "--show", "3", env=plat.env, timeout=1200)
        took = time.monotonic() - started
        assert repaired.returncode == 0, repaired.stdout[-3000:] + repaired.stderr[-3000:]
        assert f"repair: {EVENTS} re-streamed, 3 deleted" in repaired.stdout, repaired.stdout
        assert "after repair: 0 mismatches" in repaired.stdout
        assert "Traceback" not in repaired.stderr
        assert titles(sample[:-1]) == [f"event {i}" if i != 2 else "streamed" for i, _ in sample[:-1]]
        assert titles([(3, day_of(3) + "Z")]) == [None]
        print(
            f"verify --repair of {EVENTS:,} entities keyed by (bigint, date): {took:.0f} s ({EVENTS / took:,.0f}/s)"
        )
    finally:
        drop_platform(stack, plat, table)
