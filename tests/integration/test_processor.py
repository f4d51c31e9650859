"""The stream processor against the real stack: Postgres -> Debezium -> Kafka -> processor -> Feast."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pandas as pd
import psycopg
from confluent_kafka import Producer

from tests.integration.conftest import ALL_STORES, SCALAR_STORES, StackHandle
from tests.integration.helpers import wait_until
from tests.integration.platform import Platform

CUSTOMER = ["segment", "credit_limit", "country"]


def insert_customer(
    conn: psycopg.Connection[Any], segment: str = "standard", credit: float = 100.0, country: str = "GB"
) -> int:
    row = conn.execute(
        "INSERT INTO customers (email, full_name, country, segment, credit_limit) VALUES (%s, 'T', %s, %s, %s) "
        "RETURNING id",
        (f"{uuid.uuid4().hex[:12]}@t.example", country, segment, credit),
    ).fetchone()
    assert row
    return int(row[0])


@ALL_STORES
def test_insert_update_delete_reach_the_online_store(stack: StackHandle, platform: Platform) -> None:
    platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, "silver", 250.5, "FR")

        def online() -> dict[str, list[Any]]:
            return platform.online("customer_profile", "customer_id", [cid], CUSTOMER)

        # The first change waits for the processor's start too (models, the store, the group's partitions):
        # 30 s timed out once for Milvus on a loaded CI machine (2026-11-28); the changes after it keep 30 s.
        wait_until(
            lambda: online()["segment"] == ["silver"],
            120,
            "the insert online",
            lambda: platform.log()[-3000:],
        )
        assert online()["credit_limit"] == [250.5] and online()["country"] == ["FR"]

        conn.execute("UPDATE customers SET segment = 'gold', credit_limit = 999.99 WHERE id = %s", (cid,))
        wait_until(lambda: online()["segment"] == ["gold"], 30, "the update online")
        assert online()["credit_limit"] == [999.99]

        conn.execute("DELETE FROM customers WHERE id = %s", (cid,))
        wait_until(lambda: online()["segment"] == [None], 30, "the delete online")
        assert online()["credit_limit"] == [None]


@SCALAR_STORES
def test_bad_rows_are_dead_lettered_then_replayed_after_a_fix(
    stack: StackHandle, platform: Platform, made: list[tuple[str, int]]
) -> None:
    platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        bad = insert_customer(conn, "vip", -5.0)
        good = insert_customer(conn, "gold", 10.0)
        made.extend([("customers", bad), ("customers", good)])
    wait_until(
        lambda: platform.online("customer_profile", "customer_id", [good], CUSTOMER)["segment"] == ["gold"]
    )

    def letter() -> Any:
        return next((d for d in platform.dead_letters() if d.key and f'"id":{bad}' in d.key.decode()), None)

    dead = wait_until(letter, 30, "the bad row in the dead-letter topic")
    failed = {(f["expectation"], f["column"]) for f in dead.failed_expectations}
    assert ("expect_column_values_to_be_in_set", "segment") in failed
    assert ("expect_column_values_to_be_between", "credit_limit") in failed
    assert dead.feature_view == "customer_profile" and dead.topic == platform.topic("public.customers")
    assert b'"segment":"vip"' in (dead.value or b"")  # the original message, verbatim
    assert platform.online("customer_profile", "customer_id", [bad], CUSTOMER)["segment"] == [None]

    # The fix: 'vip' is a real segment and credit may be negative (an overdraft). Replay re-validates.
    suite_path = platform.suites / "customer_profile.json"
    suite = (
        suite_path.read_text()
        .replace('"platinum"', '"platinum", "vip"')
        .replace('"min_value": 0', '"min_value": -1000')
    )
    suite_path.write_text(suite)
    from tests.integration.helpers import cli

    replayed = cli("dlq", "replay", env=platform.env)
    assert replayed.returncode == 0, replayed.stderr
    assert "0 dead-lettered again" in replayed.stdout, [
        (d.feature_view, d.reason, d.key) for d in platform.dead_letters()
    ]
    online = platform.online("customer_profile", "customer_id", [bad], CUSTOMER)
    assert online["segment"] == ["vip"] and online["credit_limit"] == [-5.0]
    again = cli("dlq", "replay", env=platform.env)  # each dead letter is replayed once
    assert again.returncode == 0 and "replayed 0" in again.stdout


def test_garbage_message_goes_to_dead_letters_and_the_stream_goes_on(
    stack: StackHandle, platform: Platform
) -> None:
    platform.start_processor()
    producer = Producer({"bootstrap.servers": stack.settings.bootstrap_servers})
    producer.produce(platform.topic("public.customers"), key=b'{"id": -1}', value=b"\x00\xffnot json at all")
    producer.produce(platform.topic("public.customers"), key=b"not a key", value=b'{"op": "?"}')
    assert producer.flush(10) == 0
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, "gold")
    wait_until(
        lambda: platform.online("customer_profile", "customer_id", [cid], CUSTOMER)["segment"] == ["gold"],
        30,
        "a good row after the garbage",
    )
    topic = platform.topic("public.customers")

    def garbage_letters() -> list[Any] | None:
        # Each garbage record's letter, once both are in (the two may sit in different partitions).
        mine = [d for d in platform.dead_letters() if d.topic == topic]
        raw = [d for d in mine if d.value == b"\x00\xffnot json at all"]  # kept byte for byte
        bad_key = [d for d in mine if d.key == b"not a key"]
        return raw + bad_key if raw and bad_key else None

    letters = wait_until(garbage_letters, 30, "both garbage records in the dead-letter topic")
    assert all("not a Debezium change event" in d.reason for d in letters)
    assert "not valid JSON" in letters[0].reason
    assert platform.processes[0].poll() is None  # still running


def test_offline_history_is_point_in_time_correct(stack: StackHandle, platform: Platform) -> None:
    platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, "standard", 100.0)
        wait_until(
            lambda: (
                platform.online("customer_profile", "customer_id", [cid], CUSTOMER)["segment"] == ["standard"]
            )
        )
        between = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE customers SET segment = 'gold', credit_limit = 500 WHERE id = %s", (cid,))
        wait_until(
            lambda: platform.online("customer_profile", "customer_id", [cid], CUSTOMER)["segment"] == ["gold"]
        )
        after = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute("DELETE FROM customers WHERE id = %s", (cid,))
        wait_until(
            lambda: platform.online("customer_profile", "customer_id", [cid], CUSTOMER)["segment"] == [None]
        )
        gone = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]

    entity_df = pd.DataFrame(
        {"customer_id": [cid, cid, cid], "event_timestamp": [between, after, gone]}
    ).astype({"customer_id": "int64"})

    def history() -> list[pd.DataFrame] | None:
        df = (
            platform.store()
            .get_historical_features(
                entity_df=entity_df, features=["customer_profile:segment", "customer_profile:credit_limit"]
            )
            .to_df()
        )
        df = df.sort_values("event_timestamp").reset_index(drop=True)
        # The history is appended just after the online write, so the delete can be online before its
        # tombstone is in the history: wait for all three changes, then check their values.
        return (
            [df]
            if len(df) == 3
            and df["segment"].tolist()[:2] == ["standard", "gold"]
            and pd.isna(df["segment"][2])
            else None
        )

    [df] = wait_until(history, 60, "the three changes (insert, update, delete) in the offline store")
    assert df["credit_limit"].tolist()[:2] == [100.0, 500.0]
    assert pd.isna(df["segment"][2]) and pd.isna(df["credit_limit"][2])  # deleted: no value after the delete


def test_column_added_and_dropped_in_postgres_does_not_stop_the_stream(
    stack: StackHandle, platform: Platform
) -> None:
    platform.start_processor()
    column = f"nick_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE customers ADD COLUMN {column} text")
        try:
            a = insert_customer(conn, "silver")
            conn.execute(f"UPDATE customers SET {column} = 'ace' WHERE id = %s", (a,))
        finally:
            conn.execute(f"ALTER TABLE customers DROP COLUMN {column}")
        b = insert_customer(conn, "gold")
    wait_until(
        lambda: (
            platform.online("customer_profile", "customer_id", [a, b], CUSTOMER)["segment"]
            == ["silver", "gold"]
        ),
        30,
        "rows written around the schema changes",
    )
    assert platform.processes[0].poll() is None


def test_new_feature_view_applied_while_running_receives_rows(stack: StackHandle, platform: Platform) -> None:
    platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        first = insert_customer(conn, "gold")
    wait_until(
        lambda: platform.online("customer_profile", "customer_id", [first], CUSTOMER)["segment"] == ["gold"]
    )

    # A data engineer declares a view over an already-captured table, adds its suite, runs feast apply.
    (platform.repo / "customer_credit.py").write_text("""
from datetime import timedelta
from entities import customer
from feast import FeatureView, Field, FileSource, PushSource
from feast.types import Float64, Int64
customer_credit = FeatureView(
    name="customer_credit", entities=[customer], ttl=timedelta(0),
    schema=[Field(name="customer_id", dtype=Int64), Field(name="credit_limit", dtype=Float64)],
    source=PushSource(name="customer_credit_push", batch_source=FileSource(
        name="customer_credit_history", path="data/offline/customer_credit",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={"cdc.table": "public.customers", "cdc.key": "customer_id=id"},
)
""")
    (platform.suites / "customer_credit.json").write_text(
        '{"name": "customer_credit", "expectations": [{"type": "expect_column_values_to_not_be_null", '
        '"kwargs": {"column": "credit_limit"}}]}'
    )
    from stores.repository import feast_apply

    feast_apply(platform.repo)
    # The processor re-reads the registry every few seconds; changes from then on reach the new view.
    with psycopg.connect(stack.app, autocommit=True) as conn:
        cid = insert_customer(conn, "gold", 300.0)
        credit = iter(range(301, 1000))

        def received() -> bool:
            value = next(credit)
            conn.execute("UPDATE customers SET credit_limit = %s WHERE id = %s", (value, cid))
            got = wait_online(platform, cid, value)
            return got

        wait_until(received, 60, "the new view to receive rows")
    assert platform.processes[0].poll() is None  # picked up without a restart
    assert platform.online("customer_profile", "customer_id", [cid], CUSTOMER)["segment"] == ["gold"]


def wait_online(platform: Platform, cid: int, value: float, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if platform.online("customer_credit", "customer_id", [cid], ["credit_limit"])["credit_limit"] == [
            value
        ]:
            return True
        time.sleep(0.1)
    return False
