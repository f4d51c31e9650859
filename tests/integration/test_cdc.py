"""Row changes in Postgres arrive in Kafka as Debezium change events (the shipped connector)."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
from psycopg import sql

from connectors.definition import load_definition
from tests.integration.conftest import StackHandle
from tests.integration.helpers import Capture, cli, read_until


def test_stack_up_twice_is_a_noop(stack: StackHandle) -> None:
    pids = (stack.stack.postgres.pid(), stack.stack.kafka.daemon.pid(), stack.stack.connect.daemon.pid())
    assert all(pids)
    again = stack.stack.up()
    assert (
        stack.stack.postgres.pid(),
        stack.stack.kafka.daemon.pid(),
        stack.stack.connect.daemon.pid(),
    ) == pids
    assert again < stack.startup_s


def test_insert_update_delete_arrive_in_order_with_before_and_after(stack: StackHandle) -> None:
    deployed = cli("connector", "deploy")
    assert deployed.returncode == 0, deployed.stderr
    again = cli("connector", "deploy")  # idempotent
    assert again.returncode == 0, again.stderr

    email = f"it-{uuid.uuid4().hex[:8]}@example.com"
    with psycopg.connect(stack.app) as conn:
        row = conn.execute(
            "INSERT INTO customers (email, full_name, country, credit_limit, birth_date) "
            "VALUES (%s, 'Grace', 'US', 100.50, '1985-12-09') RETURNING id",
            (email,),
        ).fetchone()
        assert row
        cid = row[0]
        conn.commit()
        conn.execute("UPDATE customers SET segment = 'gold', credit_limit = 999.99 WHERE id = %s", (cid,))
        conn.commit()
        conn.execute("DELETE FROM customers WHERE id = %s", (cid,))
        conn.commit()

    topic = load_definition().topic_for("public.customers")
    events = read_until(
        stack.settings, [topic], lambda evs: sum(e.key == {"id": cid} for e in evs) >= 4, timeout_s=60
    )
    ours = [e for e in events if e.key == {"id": cid}]
    assert [e.op for e in ours] == ["c", "u", "d", "tombstone"]
    create, update, delete, _ = ours
    assert create.before is None and create.after is not None
    assert create.after["email"] == email
    assert create.after["credit_limit"] == "100.50"  # decimal.handling.mode=string: exact
    assert create.after["birth_date"].startswith("1985-12-09")  # time.precision.mode=isostring
    assert update.before["segment"] == "standard" and update.after["segment"] == "gold"
    assert update.after["credit_limit"] == "999.99"
    assert delete.before["segment"] == "gold" and delete.after is None
    assert all(e.source_ts_ms for e in ours[:3])
    # one key, one partition: per-key order is guaranteed by Kafka
    assert len({e.partition for e in ours}) == 1

    status = cli("stack", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert {s["name"]: s["state"] for s in report["services"]} == {
        "postgres": "RUNNING",
        "kafka": "RUNNING",
        "connect": "RUNNING",
    }
    shop = next(c for c in report["connectors"] if c["name"] == "shop-postgres")
    assert shop["state"] == "RUNNING" and [t["state"] for t in shop["tasks"]] == ["RUNNING"]


def test_rows_present_before_deploy_arrive_as_snapshot_reads(stack: StackHandle, capture) -> None:  # type: ignore[no-untyped-def]
    def seed(conn: psycopg.Connection, names: dict[str, str]) -> None:  # type: ignore[type-arg]
        for i in range(5):
            conn.execute(
                sql.SQL("INSERT INTO {} (id, label, price) VALUES (%s, %s, %s)").format(
                    sql.Identifier(names["snap_items"])
                ),
                (i, f"item {i}", f"{i}.25"),
            )

    cap: Capture = capture({"snap_items": "id int PRIMARY KEY, label text, price numeric(8,2)"}, seed=seed)
    with psycopg.connect(stack.app) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (id, label, price) VALUES (99, 'live', 1.00)").format(
                sql.Identifier(cap.table("snap_items"))
            )
        )

    events = read_until(stack.settings, [cap.topic("snap_items")], lambda evs: len(evs) >= 6)
    reads = [e for e in events if e.op == "r"]
    assert sorted(e.key["id"] for e in reads) == [0, 1, 2, 3, 4]  # type: ignore[index]
    assert all(e.before is None and e.after is not None for e in reads)
    assert {e.after["price"] for e in reads} == {"0.25", "1.25", "2.25", "3.25", "4.25"}  # type: ignore[index]
    assert all(e.snapshot for e in reads)
    live = [e for e in events if e.op == "c"]
    assert [e.key for e in live] == [{"id": 99}]


def test_truncate_is_captured(stack: StackHandle, capture) -> None:  # type: ignore[no-untyped-def]
    cap: Capture = capture({"trunc_items": "id int PRIMARY KEY"})
    with psycopg.connect(stack.app) as conn:
        table = sql.Identifier(cap.table("trunc_items"))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
        conn.commit()
        conn.execute(sql.SQL("TRUNCATE {}").format(table))
    events = read_until(stack.settings, [cap.topic("trunc_items")], lambda evs: len(evs) >= 2)
    # A truncate has no key, so it may sit on another partition than the insert: compare as a set.
    assert sorted(e.op for e in events) == ["c", "t"]
    truncate = next(e for e in events if e.op == "t")
    assert truncate.key is None and truncate.table == f"public.{cap.table('trunc_items')}"
    assert time.time() * 1000 - truncate.source_ts_ms < 600_000  # type: ignore[operator]
