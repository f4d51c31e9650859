"""The stores equal the source after changes Postgres makes in ways the happy path does not show.

The faults that reach the online store's guards (TOAST, snapshot repair, materialize race, fencing, LSN
reset, truncate barrier, poison + broken view, kill -9) run on every online store: SQLite, Postgres +
pgvector and Redis (SCALAR_STORES)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from connectors.definition import ConnectorDefinition
from connectors.deploy import deploy, remove
from core.settings import ensure_secrets_file
from jobs.materialize import Materializer
from stack.launcher import GENERATED_SECRETS
from stack.postgres import Postgres
from stores.registry import open_online_sink
from stores.repository import feast_apply
from stores.sink import UPSERT, SinkRow
from streams.processor import Processor, ProcessorConfig, build_pipeline
from streams.toast import PLACEHOLDER
from tests.integration.conftest import ALL_STORES, SCALAR_STORES, StackHandle, use_online_store
from tests.integration.helpers import cli, cli_background, history_rows, read_until, unique, wait_until
from tests.integration.platform import Platform, make_platform
from tests.integration.test_processor import insert_customer

EXTRAS_VIEW = """
from datetime import timedelta
from entities import product
from feast import FeatureView, Field, FileSource, PushSource
from feast.types import Array, Int64, String
product_extras = FeatureView(
    name="product_extras", entities=[product], ttl=timedelta(0),
    schema=[Field(name="product_id", dtype=Int64), Field(name="attributes", dtype=String),
            Field(name="tags", dtype=Array(String)), Field(name="description", dtype=String)],
    source=PushSource(name="product_extras_push", batch_source=FileSource(
        name="product_extras_history", path="data/offline/product_extras",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.products", "cdc.key": "product_id=id"},
)
"""


@pytest.fixture
def default_identity(stack: StackHandle) -> Iterator[None]:
    """products with Postgres's default replica identity (the shipped schema sets FULL)."""
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("ALTER TABLE products REPLICA IDENTITY DEFAULT")
    yield
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("ALTER TABLE products REPLICA IDENTITY FULL")


def history(platform: Platform, view: str, product_id: int) -> list[dict[str, Any]]:
    rows = history_rows(platform.repo, view)
    return sorted((r for r in rows if r["product_id"] == product_id), key=lambda r: r["event_timestamp"])


@SCALAR_STORES
def test_unchanged_toasted_values_stay_right_online_in_vectors_and_in_history(
    stack: StackHandle, platform: Platform, default_identity: None, made: list[tuple[str, int]]
) -> None:
    (platform.repo / "product_extras.py").write_text(EXTRAS_VIEW)
    (platform.suites / "product_extras.json").write_text(
        json.dumps(
            {
                "name": "product_extras",
                "expectations": [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "attributes"}}
                ],
            }
        )
    )
    feast_apply(platform.repo)
    platform.start_processor()
    # Random text: compression cannot bring it under the TOAST threshold, so it is stored out of line.
    description = "Trail boots. " + secrets.token_hex(6000)
    tags = [secrets.token_hex(8) for _ in range(800)]
    attributes = {"notes": secrets.token_hex(6000), "size": 42}
    with psycopg.connect(stack.app, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO products (sku, name, description, category, price, tags, attributes) "
            "VALUES (%s, 'Boots', %s, 'shoes', 10, %s, %s) RETURNING id",
            (f"toast-{secrets.token_hex(4)}", description, tags, json.dumps(attributes)),
        ).fetchone()
        assert row
        pid = int(row[0])
        made.append(("products", pid))

    vectors = platform.online_store != "redis"  # Feast's Redis store holds no vector view

    def docs() -> dict[str, list[Any]]:
        return platform.online(
            "product_documents", "product_id", [pid], ["description", "embedding", "price"]
        )

    def price() -> list[Any]:
        return platform.online("product_details", "product_id", [pid], ["price"])["price"]  # type: ignore[no-any-return]

    wait_until(lambda: price() == [10.0], 90, "the product online")
    if vectors:
        wait_until(lambda: docs()["embedding"] != [None], 90, "the product's first vector")
        first_vector = np.asarray(docs()["embedding"][0])

    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("UPDATE products SET price = 11 WHERE id = %s", (pid,))
    wait_until(lambda: price() == [11.0], 60, "the price update online")

    if vectors:
        wait_until(lambda: docs()["price"] == [11.0], 60, "the price update in the vector view")
        got = docs()
        assert got["description"] == [description]
        assert np.allclose(
            np.asarray(got["embedding"][0]), first_vector
        )  # the text's vector, not the placeholder's
    details = platform.online("product_details", "product_id", [pid], ["description", "tags", "price"])
    assert (
        details["description"] == [description] and details["tags"] == [tags] and details["price"] == [11.0]
    )
    extras = platform.online("product_extras", "product_id", [pid], ["attributes", "tags"])
    assert json.loads(extras["attributes"][0]) == attributes and extras["tags"] == [tags]

    for view in ("product_details", "product_extras", *(["product_documents"] if vectors else [])):
        # Appended after the online write: polled, not read at once.
        rows = wait_until(
            lambda view=view: (lambda got: got if len(got) >= 2 else None)(history(platform, view, pid)),
            60,
            f"{view}: both versions in the history",
        )
        latest = rows[-1]
        assert latest["description"] == description, f"{view}: latest history row lost the description"
        assert PLACEHOLDER not in json.dumps(latest, default=str), f"{view}: placeholder in history"
    assert not platform.dead_letters()


BROKEN_VIEW = """
from datetime import timedelta
from entities import customer
from feast import FeatureView, Field, FileSource, PushSource
from feast.types import Int64, String
customer_broken = FeatureView(
    name="customer_broken", entities=[customer], ttl=timedelta(0),
    schema=[Field(name="customer_id", dtype=Int64), Field(name="segment", dtype=String)],
    source=PushSource(name="customer_broken_push", batch_source=FileSource(
        name="customer_broken_history", path="data/offline/customer_broken",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.customers", "cdc.key": "customer_id"},
)
"""


@SCALAR_STORES
def test_a_poison_value_and_a_broken_view_stop_nothing_else(
    stack: StackHandle, platform: Platform, made: list[tuple[str, int]]
) -> None:
    # Plain `feast apply` accepts the malformed cdc.key (featurectl feast-apply would refuse it).
    (platform.repo / "customer_broken.py").write_text(BROKEN_VIEW)
    (platform.suites / "customer_broken.json").write_text('{"name": "customer_broken", "expectations": []}')
    feast_apply(platform.repo)
    proc = platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        poison = insert_customer(conn, "gold")
        made.append(("customers", poison))
        # Valid in Postgres, beyond Python's datetime: the online store cannot represent it.
        conn.execute("UPDATE customers SET birth_date = '12000-01-01' WHERE id = %s", (poison,))
        good = insert_customer(conn, "silver")
        product = conn.execute(
            "INSERT INTO products (sku, name, description, category, price) "
            "VALUES (%s, 'Mug', 'A mug', 'kitchen', 5) RETURNING id",
            (f"poison-{secrets.token_hex(4)}",),
        ).fetchone()
        assert product
        made.extend([("customers", good), ("products", int(product[0]))])
        conn.execute("UPDATE products SET price = 6 WHERE id = %s", (product[0],))

    wait_until(
        lambda: (
            platform.online("customer_profile", "customer_id", [good], ["segment"])["segment"] == ["silver"]
        ),
        90,
        "the customer inserted after the poison value",
    )
    wait_until(
        lambda: platform.online("product_details", "product_id", [product[0]], ["price"])["price"] == [6.0],
        60,
        "the product update",
    )

    def letters() -> list[Any]:
        return platform.dead_letters()

    def poison_letter() -> Any:
        return next(
            (
                d
                for d in letters()
                if d.offset is not None
                and d.feature_view == "customer_profile"
                and b"12000" in (d.value or b"")
            ),
            None,
        )

    letter = wait_until(poison_letter, 60, "the poison record in the dead-letter topic")
    # Named before any write: the column, why, and the fix (validation/feature_types.py).
    assert "fits_feature_type(birth_date)" in letter.reason and "beyond year 9999" in letter.reason
    assert "fix:" in letter.reason
    broken = [d for d in letters() if d.feature_view == "customer_broken"]
    assert broken and all("cdc.key='customer_id' is malformed" in d.reason for d in broken)
    assert proc.poll() is None
    assert "customer_broken is not materialised" in platform.log()

    # Replaying the dead letters: the poison is dead-lettered again (attempt 2), replay does not crash.
    replayed = cli("dlq", "replay", env=platform.env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    wait_until(
        lambda: any(d.attempt == 2 and b"12000" in (d.value or b"") for d in letters()),
        60,
        "the poison dead-lettered again by the replay",
    )


@pytest.mark.parametrize("signal_platform", ["sqlite", "postgres", "redis"], indirect=True)
def test_a_snapshot_repairs_a_wrong_row_and_never_beats_a_change_committed_after_its_read(
    stack: StackHandle, signal_platform: Platform, made: list[tuple[str, int]], tmp_path: Path
) -> None:
    platform = signal_platform
    platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        wrong, racing = insert_customer(conn, "gold", 100.0), insert_customer(conn, "gold", 200.0)
        made.extend([("customers", wrong), ("customers", racing)])

    def credit(ids: list[int]) -> list[Any]:
        return platform.online("customer_profile", "customer_id", ids, ["credit_limit"])["credit_limit"]  # type: ignore[no-any-return]

    wait_until(lambda: credit([wrong, racing]) == [100.0, 200.0], 90, "both customers online")

    # Plant a wrong value under the stored version, as a bug or a bad manual write would.
    sink = open_online_sink(platform.store())
    (stored,) = sink.stored_orders("customer_profile", [{"customer_id": wrong}])
    assert stored is not None
    version, minor = stored
    planted = {"country": "GB", "segment": "gold", "credit_limit": -1.0, "birth_date": None}
    when = datetime.now(UTC)
    sink.add(
        [
            SinkRow(
                "customer_profile",
                UPSERT,
                {"customer_id": wrong},
                planted,
                when,
                version,
                "u",
                "planted",
                None,
                minor,
            )
        ]
    )
    sink.flush()
    sink.close()
    assert credit([wrong]) == [-1.0]

    # A transaction changes the other customer, and stays open while the snapshot reads its row.
    racer = psycopg.connect(stack.app)
    racer.execute("UPDATE customers SET credit_limit = 777 WHERE id = %s", (racing,))
    snap_log = tmp_path / "snapshot.log"
    snap = cli_background(
        "snapshot",
        "public.customers",
        "--wait",
        "240",
        "--file",
        str(platform.definition.path),
        env=platform.env,
        log=snap_log,
    )
    try:
        read_until(
            platform.settings,
            [platform.topic("public.customers")],
            lambda events: {wrong, racing} <= {(e.key or {}).get("id") for e in events if e.op == "r"},
            timeout_s=240,
        )
    finally:
        racer.commit()  # committed after its row was read: its change must win over the read
        racer.close()
    assert snap.wait(300) == 0, snap_log.read_text()

    wait_until(
        lambda: credit([wrong, racing]) == [100.0, 777.0], 120, "the repair and the racing commit online"
    )


@SCALAR_STORES
def test_a_new_source_cluster_whose_positions_went_backwards_stops_the_processor(
    stack: StackHandle, platform: Platform, tmp_path: Path, made: list[tuple[str, int]]
) -> None:
    """A restore or rebuild: the same tables and keys, streamed from a cluster whose WAL starts over."""
    proc = platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, "gold")
        made.append(("customers", cid))
        row = conn.execute("SELECT email FROM customers WHERE id = %s", (cid,)).fetchone()
        assert row
    wait_until(
        lambda: platform.online("customer_profile", "customer_id", [cid], ["segment"])["segment"] == ["gold"],
        90,
        "the customer from the first cluster",
    )

    # The second cluster: same schema, roles and publication, its own WAL (positions start low).
    second = stack.settings.model_copy(
        update={"data_dir": tmp_path / "second", "pg_port": stack.settings.pg_port + 100}
    )
    # A restore keeps the roles' passwords: Connect resolves the Debezium one from its own environment.
    second.data_dir.mkdir(parents=True)
    shutil.copy(stack.settings.secrets_file, second.secrets_file)
    ensure_secrets_file(second.secrets_file, GENERATED_SECRETS)
    pg = Postgres(second)
    definition = ConnectorDefinition(
        f"{platform.name}_second", dict(platform.definition.config), tmp_path / "second.json"
    )
    # The connector of the cluster that is gone goes too (two connectors with one topic prefix in one
    # Connect worker wait ~2 min for Debezium's JMX names to free up).
    remove(stack.settings, platform.definition)
    try:
        pg.start()
        pg.bootstrap(definition)  # its publication has the platform's name: same tables, same topics
        with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO customers (id, email, full_name, country, segment, credit_limit) "
                "VALUES (%s, %s, 'T', 'GB', 'gold', 100)",
                (cid, row[0]),
            )
        deploy(second, definition, timeout_s=120)
        with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
            conn.execute("UPDATE customers SET segment = 'platinum' WHERE id = %s", (cid,))

        wait_until(lambda: proc.poll() is not None, 120, "the processor to stop")
        log = platform.log()
        assert proc.returncode == 1, log[-3000:]
        assert "went backwards" in log and "featurectl online reset --yes" in log
        # Nothing from the second cluster was applied over the first one's state.
        assert platform.online("customer_profile", "customer_id", [cid], ["segment"])["segment"] == ["gold"]
    finally:
        try:
            remove(second, definition)
        finally:
            pg.stop()
            pg.wipe()


GADGETS_VIEW = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, Int64, String, UnixTimestamp
gadget = Entity(name="gadget", join_keys=["gadget_id"], value_type=ValueType.INT64)
gadget_features = FeatureView(
    name="gadget_features", entities=[gadget], ttl=timedelta(0),
    schema=[Field(name="gadget_id", dtype=Int64), Field(name="name", dtype=String),
            Field(name="score", dtype=Float64), Field(name="tags", dtype=Array(String)),
            Field(name="doc", dtype=String), Field(name="seen", dtype=UnixTimestamp)],
    source=PushSource(name="gadget_push", batch_source=FileSource(
        name="gadget_history", path="data/offline/gadget_features",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.TABLE", "cdc.key": "gadget_id=id"},
)
"""


@pytest.fixture
def gadgets(stack: StackHandle, tmp_path: Path) -> Iterator[tuple[Platform, str]]:
    """A table of its own with a view over it, its connector (with signals) and a running processor."""
    name = unique("vf")
    table = f"gadgets_{name.split('_', 1)[1]}"
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, score numeric(10, 2), "
            "tags text[], doc jsonb, seen timestamptz)"
        )
        conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
        for i in range(1, 31):
            conn.execute(
                f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, now() - make_interval(days => %s))",
                (
                    i,
                    f"gadget {i} — ünïcødé",
                    "NaN" if i == 3 else i * 1.5,
                    [f"t{i}", "ß"],
                    json.dumps({"n": i}),
                    i,
                ),
            )
    plat = make_platform(
        stack.settings, stack.admin, tmp_path, name, signals=True, tables=(f"public.{table}",)
    )
    (plat.repo / "gadgets.py").write_text(GADGETS_VIEW.replace("TABLE", table))
    (plat.suites / "gadget_features.json").write_text(
        '{"name": "gadget_features", "expectations": [{"type": "expect_column_values_to_not_be_null", '
        '"kwargs": {"column": "name"}}]}'
    )
    definition = plat.definition
    deploy(stack.settings, definition, timeout_s=120)
    feast_apply(plat.repo)
    plat.start_processor()
    yield plat, table
    plat.stop_all()
    remove(stack.settings, definition)
    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def test_verify_passes_on_a_correct_store_catches_planted_mismatches_and_repair_fixes_them(
    gadgets: tuple[Platform, str],
) -> None:
    plat, _ = gadgets
    ids = list(range(1, 31))
    wait_until(
        lambda: None not in plat.online("gadget_features", "gadget_id", ids, ["name"])["name"],
        120,
        "30 gadgets online",
    )
    args = ["verify", "gadget_features", "--file", str(plat.definition.path)]
    ok = cli(*args, env=plat.env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "30 rows, 0 mismatches" in ok.stdout and "equals Postgres" in ok.stdout

    # Plant: a wrong name under gadget 5's stored version, and an entity Postgres never had.
    sink = open_online_sink(plat.store())
    (stored,) = sink.stored_orders("gadget_features", [{"gadget_id": 5}])
    assert stored is not None
    now = datetime.now(UTC)
    wrong = {"name": "wrong", "score": 7.5, "tags": ["t5", "ß"], "doc": '{"n": 5}', "seen": now}
    sink.add(
        [
            SinkRow(
                "gadget_features",
                UPSERT,
                {"gadget_id": 5},
                wrong,
                now,
                stored[0],
                "u",
                "planted",
                None,
                stored[1],
            ),
            SinkRow("gadget_features", UPSERT, {"gadget_id": 999}, wrong, now, 1, "u", "planted"),
        ]
    )
    sink.flush()
    sink.close()

    caught = cli(*args, env=plat.env)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "30 rows, 2 mismatches" in caught.stdout
    assert '{"gadget_id": 5}: differs: name: online ' in caught.stdout
    assert '{"gadget_id": 999}: not in Postgres' in caught.stdout

    repaired = cli(*args, "--repair", "--wait", "240", env=plat.env, timeout=400)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "after repair: 0 mismatches" in repaired.stdout
    assert cli(*args, env=plat.env).returncode == 0
    assert plat.online("gadget_features", "gadget_id", [5, 999], ["name"])["name"] == [
        "gadget 5 — ünïcødé",
        None,
    ]


@SCALAR_STORES
def test_materialize_racing_the_processor_never_writes_an_older_change(
    stack: StackHandle,
    platform: Platform,
    made: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, "gold", 100.0)
        made.append(("customers", cid))
        conn.execute("UPDATE customers SET credit_limit = 200 WHERE id = %s", (cid,))

    def credit() -> list[Any]:
        return platform.online("customer_profile", "customer_id", [cid], ["credit_limit"])["credit_limit"]  # type: ignore[no-any-return]

    wait_until(lambda: credit() == [200.0], 90, "the customer's second change online")
    wait_until(lambda: len(history_of(platform, cid)) >= 2, 30, "its history")

    # The race, made certain: right after materialize has read the stored versions, a newer change is
    # committed, and the processor gets 5 s to write it. Without the write lock it does, and materialize
    # then puts the history's older row over it.
    store = platform.store()
    sink_class = type(open_online_sink(store))  # the store's sink, whose version read is raced
    read_versions = sink_class._current_versions  # type: ignore[attr-defined]
    raced: list[bool] = []

    def racing(self: Any, *args: Any, **kwargs: Any) -> Any:
        versions = read_versions(self, *args, **kwargs)
        if not raced:
            raced.append(True)
            with psycopg.connect(stack.app, autocommit=True) as conn:
                conn.execute("UPDATE customers SET credit_limit = 300 WHERE id = %s", (cid,))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and credit() != [300.0]:
                time.sleep(0.1)
        return versions

    monkeypatch.setattr(sink_class, "_current_versions", racing)
    materializer = Materializer(store, tmp_path / "jobs", chunk=1_000_000)  # one flush: the race hits it
    report = materializer.run(store.get_feature_view("customer_profile"))
    monkeypatch.undo()
    assert raced and report.entities >= 1
    wait_until(lambda: credit() == [300.0], 60, "the processor's newer change to stand")


def history_of(platform: Platform, cid: int) -> list[dict[str, Any]]:
    return [
        r for r in history_rows(platform.repo, "customer_profile", ["customer_id"]) if r["customer_id"] == cid
    ]


@pytest.mark.parametrize("online", ["sqlite", "postgres", "redis", "milvus"])
def test_a_truncate_with_changes_queued_on_other_partitions_brings_no_row_back(
    stack: StackHandle, capture: Any, tmp_path: Path, online: str, request: pytest.FixtureRequest
) -> None:
    """200 inserts over 4 partitions, then a TRUNCATE (no key: any partition), all queued before the
    processor starts: however it interleaves the partitions, no row from before the truncate is online."""
    cap = capture({"things": "id bigint PRIMARY KEY, label text NOT NULL"})
    table = cap.table("things")
    plat = make_platform(
        stack.settings, stack.admin, tmp_path, cap.definition.name, tables=(f"public.{table}",)
    )
    plat.definition = cap.definition  # the capture's connector (already deployed) feeds this platform
    use_online_store(plat, online, request)
    (plat.repo / "things.py").write_text(THINGS_VIEW.replace("TABLE", table))
    (plat.suites / "thing_features.json").write_text('{"name": "thing_features", "expectations": []}')
    feast_apply(plat.repo)
    with psycopg.connect(stack.app, autocommit=True) as conn:
        for i in range(1, 201):
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(table)), (i, f"t{i}")
            )
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1000, 'after')").format(sql.Identifier(table)))
    read_until(
        stack.settings,
        [cap.topic("things")],
        lambda events: (
            any((e.key or {}).get("id") == 1000 for e in events) and any(e.op == "t" for e in events)
        ),
        timeout_s=90,
    )
    plat.start_processor()
    try:
        wait_until(
            lambda: plat.online("thing_features", "thing_id", [1000], ["label"])["label"] == ["after"],
            90,
            "the row inserted after the truncate",
        )
        # Partitions are ordered each on its own, so until every one is written the store may briefly hold
        # rows from either side of the truncate; once all are committed none from before it may remain.
        wait_until(lambda: plat.caught_up([cap.topic("things")]), 90, "the processor to commit every change")
        labels = plat.online("thing_features", "thing_id", list(range(1, 201)), ["label"])["label"]
        came_back = 200 - labels.count(None)
        assert came_back == 0, (
            f"{came_back} rows from before the truncate came back; processor log:\n{plat.log()}"
        )
    finally:
        plat.stop_all()


THINGS_VIEW = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Int64, String
thing = Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.INT64)
thing_features = FeatureView(
    name="thing_features", entities=[thing], ttl=timedelta(0),
    schema=[Field(name="thing_id", dtype=Int64), Field(name="label", dtype=String)],
    source=PushSource(name="thing_push", batch_source=FileSource(
        name="thing_history", path="data/offline/thing_features",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.TABLE", "cdc.key": "thing_id=id"},
)
"""


@ALL_STORES
def test_a_processor_that_lost_its_partitions_while_stalled_writes_nothing(
    stack: StackHandle,
    platform: Platform,
    made: list[tuple[str, int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Copy A stalls in the middle of a batch past max.poll.interval.ms; the group hands its partitions to
    copy B, which writes the batch's change. When A wakes up and flushes, it is fenced: no second history
    row, nothing committed by A."""
    settings = platform.settings.model_copy(update={"max_poll_interval_ms": 10_000})
    store = platform.store()
    pipeline = build_pipeline(settings, store)
    stale = Processor(
        settings, store, ProcessorConfig.from_settings(settings, platform.definition.topic_prefix), pipeline
    )
    wanted: list[int] = []
    stalled, release = threading.Event(), threading.Event()
    flush = pipeline.online.flush

    def stalling_flush() -> list[SinkRow]:
        pending = pipeline.online._pending  # type: ignore[attr-defined]
        if wanted and not stalled.is_set() and any(r.keys.get("customer_id") == wanted[0] for r in pending):
            stalled.set()
            release.wait(180)  # a paused VM, a GC pause: the background heartbeat goes on, polls do not
        return flush()

    pipeline.online.flush = stalling_flush  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=stale.run, args=(stop,), daemon=True)
    caplog.set_level(logging.INFO, logger="streams")
    thread.start()
    try:
        with psycopg.connect(stack.app, autocommit=True) as conn:
            cid = insert_customer(conn, "gold", 100.0)
            made.append(("customers", cid))
        wanted.append(cid)  # the connector snapshots no data: its topics (and A's partitions) begin here
        assert stalled.wait(90), "copy A never read the change"
        platform.start_processor("b")
        wait_until(
            lambda: (
                platform.online("customer_profile", "customer_id", [cid], ["segment"])["segment"] == ["gold"]
            ),
            120,
            "copy B to write the change copy A is stuck on",
        )
        wait_until(
            lambda: platform.caught_up([platform.topic("public.customers")]), 60, "copy B to commit it"
        )
        stop.set()  # A finishes the batch it holds (flushes every sink) before run() returns
        release.set()
        thread.join(60)
        assert not thread.is_alive()
        rows = history_of(platform, cid)
        assert len(rows) == 1, f"the stale copy wrote its batch too: {rows}"
        assert any("claimed by another processor" in r.getMessage() for r in caplog.records)
    finally:
        release.set()
        stop.set()
        thread.join(60)
        platform.stop_all()


def test_a_training_set_gets_the_last_of_a_transactions_changes(
    stack: StackHandle, platform: Platform, made: list[tuple[str, int]]
) -> None:
    """150 customers, each updated twice in one transaction (both changes share its commit time):
    every one of them has the second value in a training set taken after the commit."""
    import pandas as pd

    with psycopg.connect(stack.app, autocommit=True) as conn:
        ids = [insert_customer(conn, "standard", 1.0) for _ in range(150)]
        made.extend(("customers", i) for i in ids)
        with conn.transaction():
            conn.execute("UPDATE customers SET credit_limit = 2 WHERE id = ANY(%s)", (ids,))
            conn.execute("UPDATE customers SET credit_limit = 3 WHERE id = ANY(%s)", (ids,))
    platform.start_processor()
    try:
        wait_until(
            lambda: ids_with_credit(platform, 3.0) >= set(ids), 120, "every customer's last change in history"
        )
        wait_until(
            lambda: platform.caught_up([platform.topic("public.customers")]), 60, "every change committed"
        )
    finally:
        platform.stop_all()
    entity_df = pd.DataFrame({"customer_id": ids, "event_timestamp": [datetime.now(UTC)] * len(ids)})
    training = platform.store().get_historical_features(entity_df, ["customer_profile:credit_limit"]).to_df()
    assert len(training) == len(ids)
    wrong = training[training["credit_limit"] != 3.0]
    assert wrong.empty, (
        f"{len(wrong)} customers got the transaction's first change: {wrong.head().to_dict('records')}"
    )


def ids_with_credit(platform: Platform, credit: float) -> set[int]:
    rows = history_rows(platform.repo, "customer_profile", ["customer_id", "credit_limit"])
    return {r["customer_id"] for r in rows if r["credit_limit"] == credit}


EVERY_TYPE_COLUMNS = (
    "id bigint PRIMARY KEY, c_small smallint, c_int integer, c_big bigint, c_num numeric(14,4), "
    "c_real real, c_double double precision, c_text text, c_uuid uuid, c_json json, c_jsonb jsonb, "
    "c_text_arr text[], c_int_arr integer[], c_bool boolean, c_date date, c_time time, c_ts timestamp, "
    "c_tstz timestamptz, c_bytea bytea, c_enum MOOD"
)
EVERY_TYPE_FEATURES = {
    "c_small": "Int32", "c_int": "Int32", "c_big": "Int64", "c_num": "Float64", "c_real": "Float32",
    "c_double": "Float64", "c_text": "String", "c_uuid": "String", "c_json": "String", "c_jsonb": "String",
    "c_text_arr": "Array(String)", "c_int_arr": "Array(Int64)", "c_bool": "Bool", "c_date": "UnixTimestamp",
    "c_time": "String", "c_ts": "UnixTimestamp", "c_tstz": "UnixTimestamp", "c_bytea": "Bytes", "c_enum": "String",
}  # fmt: skip
EVERY_TYPE_ROWS = [
    "(1, 1, 2, 3, 1.5, 1.25, 2.5, 'plain', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": 1,  \"a\": [1, 2]}', "
    "'{\"b\": 1, \"a\": {\"c\": [true, null]}}', ARRAY['x', 'ü'], ARRAY[1, 3], true, '2026-11-22', "
    "'10:15:30.123456', '2026-11-22 10:15:30.5', '2026-11-22 10:15:30.123456+02', '\\x00ff10', 'happy')",
    "(2, -32768, -2147483648, -9223372036854775808, 'NaN', 'NaN', 'Infinity', '', "
    "'00000000-0000-0000-0000-000000000000', '[]', '{}', ARRAY[]::text[], ARRAY[]::int[], false, '0001-01-01', "
    "'00:00:00', '1970-01-01 00:00:00', '1999-12-31 23:59:59.999999+00', '\\x', 'sad')",
    "(3, 32767, 2147483647, 9223372036854775807, 1234567890.1234, '-Infinity', '-Infinity', "
    "'ünïcødé — 😀 \t\"quoted\"\\n', NULL, 'null', '\"text\"', ARRAY['{}', 'a,b'], ARRAY[0], NULL, '9999-12-31', "
    "'23:59:59.999999', '2000-02-29 12:00:00.000001', '2038-01-19 03:14:08+00', '\\xdeadbeef', NULL)",
    "(4, NULL, NULL, NULL, NULL, 0.1, 1e-300, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL)",
    "(5, 0, 0, 0, 0.0001, 3.4e38, -0.0, 'x', 'ffffffff-ffff-ffff-ffff-ffffffffffff', "
    '\'{"n": 1.50, "e": 1e3}\', \'{"n": 1.50, "e": 1e3, "u": "\\u00fc"}\', ARRAY[\'\'], ARRAY[-1, 2147483647], '
    "true, '1970-01-01', '12:00:00.1', '2026-01-01 00:00:00.12', '2026-06-01 00:00:00.1-07', '\\x2f', 'ok')",
]


def test_backfill_writes_the_same_history_rows_as_the_stream_for_every_type(
    stack: StackHandle, capture: Any, tmp_path: Path
) -> None:
    """A table with every common Postgres type, backfilled, then streamed: for the same row state both
    give byte-equal history rows, and a second backfill finds every row unchanged."""
    mood = unique("mood")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TYPE {} AS ENUM ('happy', 'sad', 'ok')").format(sql.Identifier(mood)))
    cap = capture({"every": EVERY_TYPE_COLUMNS.replace("MOOD", f'"{mood}"')}, deploy_now=False)
    table = cap.table("every")
    plat = make_platform(
        stack.settings, stack.admin, tmp_path, cap.definition.name, tables=(f"public.{table}",)
    )
    plat.definition = cap.definition
    fields = ", ".join(f'Field(name="{n}", dtype={t})' for n, t in EVERY_TYPE_FEATURES.items())
    (plat.repo / "every.py").write_text(EVERY_VIEW.replace("TABLE", table).replace("FIELDS", fields))
    (plat.suites / "every_features.json").write_text('{"name": "every_features", "expectations": []}')
    feast_apply(plat.repo)
    with psycopg.connect(stack.app, autocommit=True) as conn:
        values = sql.SQL(", ".join(EVERY_TYPE_ROWS))  # literal SQL: its JSON braces are not placeholders
        conn.execute(sql.SQL("INSERT INTO {} VALUES ").format(sql.Identifier(table)) + values)
    backfilled = cli("backfill", "every_features", env=plat.env, timeout=300)
    assert backfilled.returncode == 0, backfilled.stderr
    assert "5 rows read, 5 written" in backfilled.stdout, backfilled.stdout
    with psycopg.connect(stack.app) as conn:
        (committed,) = conn.execute(
            sql.SQL("SELECT DISTINCT pg_xact_commit_timestamp(xmin) FROM {}").format(sql.Identifier(table))
        ).fetchall()
    stamped = {r["event_timestamp"] for r in every_history(plat)["b"].values()}
    assert stamped == {committed[0]}, "a backfilled row is stamped with the commit time of its state"

    deploy(stack.settings, cap.definition, timeout_s=120)  # its initial snapshot streams the same states
    plat.start_processor()
    try:
        wait_until(lambda: len(every_history(plat)["r"]) == 5, 120, "the stream's five rows")
    finally:
        plat.stop_all()
    rows = every_history(plat)
    for sid, streamed in rows["r"].items():
        diffs = {
            name: (streamed[name], rows["b"][sid][name])
            for name in EVERY_TYPE_FEATURES
            if not same_bytes(streamed[name], rows["b"][sid][name])
        }
        assert not diffs, f"row {sid}: stream vs backfill {diffs}"
    again = cli("backfill", "every_features", env=plat.env, timeout=300)
    assert again.returncode == 0 and "0 written, 5 unchanged" in again.stdout, again.stdout + again.stderr


def every_history(plat: Platform) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {"r": {}, "b": {}}
    for row in history_rows(plat.repo, "every_features"):
        out.setdefault(row["cdc_op"], {})[row["every_id"]] = row
    return out


def same_bytes(a: Any, b: Any) -> bool:
    """Equal as stored: floats by their bits (NaN equals NaN, -0.0 differs from 0.0)."""
    import struct

    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_bytes(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


EVERY_VIEW = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp
every = Entity(name="every", join_keys=["every_id"], value_type=ValueType.INT64)
every_features = FeatureView(
    name="every_features", entities=[every], ttl=timedelta(0),
    schema=[Field(name="every_id", dtype=Int64), FIELDS],
    source=PushSource(name="every_push", batch_source=FileSource(
        name="every_history", path="data/offline/every_features",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.TABLE", "cdc.key": "every_id=id"},
)
"""


def _dead_letter_topic_accepts(platform: Platform, accept: bool) -> None:
    """Make the platform's dead-letter topic refuse every letter (each is larger than it takes), or heal it."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    admin = AdminClient({"bootstrap.servers": platform.settings.bootstrap_servers})
    topic, size = platform.settings.dlq_topic, "1048588" if accept else "64"
    if topic not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": size})])[topic].result(30)
        return
    entry = ConfigEntry("max.message.bytes", size, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("TOPIC", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


@SCALAR_STORES
def test_kill_9_and_a_failing_dead_letter_topic_add_no_history_row_a_training_set_sees_twice(
    stack: StackHandle, platform: Platform, made: list[tuple[str, int]]
) -> None:
    """Three faults around one customer's changes, then a training set at each change and a compaction:
    1. the dead-letter topic refuses letters, so a batch is retried after its history was written;
    2. the same, and the processor is killed (-9) before it commits; another one re-reads the batch;
    3. the history directory cannot be written, and the processor is killed (-9) after the online write."""
    import pandas as pd

    def letters_for(cid: int) -> int:
        return sum(1 for d in platform.dead_letters() if d.key and f'"id":{cid}' in d.key.decode())

    def credits(cid: int) -> list[float]:
        rows = history_rows(platform.repo, "customer_profile", ["customer_id", "credit_limit"])
        return [r["credit_limit"] for r in rows if r["customer_id"] == cid]

    def kill(proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGKILL)  # no chance to flush, commit or leave the group
        assert proc.wait(10) == -signal.SIGKILL

    def retries(label: str) -> int:
        return platform.log(label).count("re-reading it")

    topics = [platform.topic("public.customers")]
    _dead_letter_topic_accepts(platform, False)
    first = platform.start_processor("a")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        good = insert_customer(conn, "gold", 10.0)
        bad = insert_customer(conn, "vip", 1.0)  # not a valid segment: a dead letter
        made.extend([("customers", good), ("customers", bad)])
        times = [conn.execute("SELECT now()").fetchone()[0]]  # type: ignore[index]
        wait_until(lambda: retries("a") >= 3, 60, "the batch retried while the dead-letter topic refuses")
        _dead_letter_topic_accepts(platform, True)
        wait_until(lambda: letters_for(bad) == 1 and platform.caught_up(topics), 60, "the letter written")
        assert credits(good) == [10.0], "a retried batch wrote its history rows again"

        # 2. Written to history, not committed, killed; a new processor re-reads the batch.
        _dead_letter_topic_accepts(platform, False)
        conn.execute("UPDATE customers SET credit_limit = 20 WHERE id = %s", (good,))
        bad2 = insert_customer(conn, "vip", 2.0)
        made.append(("customers", bad2))
        times.append(conn.execute("SELECT now()").fetchone()[0])  # type: ignore[index]
        wait_until(lambda: 20.0 in credits(good) and retries("a") >= 5, 60, "history written, batch retried")
        kill(first)
        _dead_letter_topic_accepts(platform, True)
        second = platform.start_processor("b")
        wait_until(lambda: letters_for(bad2) == 1 and platform.caught_up(topics), 90, "the batch re-read")

        # 3. Online written, history refused, killed; a new processor re-reads the batch.
        directory = platform.repo / "data" / "offline" / "customer_profile"
        held = directory.with_name("customer_profile.held")
        directory.rename(held)
        directory.write_text("not a directory")  # the next history write fails (and is retried)
        conn.execute("UPDATE customers SET credit_limit = 30 WHERE id = %s", (good,))
        times.append(conn.execute("SELECT now()").fetchone()[0])  # type: ignore[index]
        wait_until(
            lambda: (
                platform.online("customer_profile", "customer_id", [good], ["credit_limit"])["credit_limit"]
                == [30.0]
                and retries("b") >= 2
            ),
            60,
            "the online write done and the history write failing",
        )
        kill(second)
        directory.unlink()
        held.rename(directory)
        platform.start_processor("c")
        wait_until(lambda: platform.caught_up(topics) and 30.0 in credits(good), 90, "the history written")
    platform.stop_all()

    def training_set() -> list[float]:
        labels = pd.DataFrame({"customer_id": [good] * 3, "event_timestamp": times})
        df = platform.store().get_historical_features(labels, ["customer_profile:credit_limit"]).to_df()
        return df.sort_values("event_timestamp")["credit_limit"].tolist()  # type: ignore[no-any-return]

    assert training_set() == [10.0, 20.0, 30.0]
    # Fault 2's re-read batch found its Kafka positions marked in the Delta history: no second copy.
    assert sorted(credits(good)) == [10.0, 20.0, 30.0]
    done = cli("compact", "customer_profile", env=platform.env)
    assert done.returncode == 0, done.stderr
    assert sorted(credits(good)) == [10.0, 20.0, 30.0]
    assert training_set() == [10.0, 20.0, 30.0]
