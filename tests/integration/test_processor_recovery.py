"""Crashes and hand-overs: a killed processor, and two processors in one consumer group, lose nothing."""

from __future__ import annotations

import os
import signal
import threading
from collections import defaultdict
from typing import Any

import psutil
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration.conftest import ALL_STORES, ONLINE_STORES, StackHandle
from tests.integration.helpers import history_rows, read_until, unique, wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor import insert_customer


class Workload(threading.Thread):
    """Inserts ``rows`` customers, then bumps credit_limit ``updates`` times, then deletes every tenth.

    Each change is its own transaction; ``expected`` holds, per id, every credit_limit it had in order.
    """

    def __init__(self, conninfo: str, rows: int, updates: int) -> None:
        super().__init__(daemon=True)
        self.conninfo, self.rows, self.updates = conninfo, rows, updates
        self.expected: dict[int, list[float]] = defaultdict(list)
        self.deleted: set[int] = set()
        self.halfway = threading.Event()
        self.error: BaseException | None = None

    @property
    def total(self) -> int:
        return self.rows + self.updates + self.rows // 10

    def run(self) -> None:
        try:
            done = 0
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                ids = []
                for i in range(self.rows):
                    row = conn.execute(
                        "INSERT INTO customers (email, full_name, country, segment, credit_limit) "
                        "VALUES (%s, 'W', 'GB', 'standard', 1) RETURNING id",
                        (f"w{i}-{os.urandom(4).hex()}@t",),
                    ).fetchone()
                    assert row
                    ids.append(row[0])
                    self.expected[row[0]].append(1.0)
                    done += 1
                for j in range(self.updates):
                    cid = ids[(j * 7) % len(ids)]
                    value = self.expected[cid][-1] + 1
                    conn.execute("UPDATE customers SET credit_limit = %s WHERE id = %s", (value, cid))
                    self.expected[cid].append(value)
                    done += 1
                    if done >= self.total // 2:
                        self.halfway.set()
                for cid in ids[::10]:
                    conn.execute("DELETE FROM customers WHERE id = %s", (cid,))
                    self.deleted.add(cid)
        except BaseException as exc:
            self.error = exc
            self.halfway.set()


def assert_online_equals_postgres(stack: StackHandle, platform: Platform, work: Workload) -> None:
    ids = sorted(work.expected)
    with psycopg.connect(stack.app) as conn:
        source = {
            r[0]: (r[1], float(r[2]))
            for r in conn.execute(
                "SELECT id, segment, credit_limit FROM customers WHERE id = ANY(%s)", (ids,)
            )
        }
    assert set(source) == set(ids) - work.deleted

    def matches() -> bool:
        online = platform.online("customer_profile", "customer_id", ids, ["segment", "credit_limit"])
        got = {
            i: (s, c)
            for i, s, c in zip(online["customer_id"], online["segment"], online["credit_limit"], strict=True)
        }
        return all(got[i] == source.get(i, (None, None)) for i in ids)

    wait_until(matches, 120, "the online store to equal Postgres row for row")


def assert_offline_has_every_change(platform: Platform, work: Workload) -> None:
    def history() -> dict[int, list[Any]]:
        rows = history_rows(
            platform.repo, "customer_profile", ["customer_id", "credit_limit", "cdc_version", "cdc_deleted"]
        )
        seen: dict[int, dict[int, Any]] = defaultdict(dict)
        for r in rows:
            cid, credit, version, deleted = (
                r["customer_id"],
                r["credit_limit"],
                r["cdc_version"],
                r["cdc_deleted"],
            )
            if cid in work.expected:
                seen[cid][version] = "deleted" if deleted else credit  # duplicates collapse on the version
        return {cid: [v for _, v in sorted(versions.items())] for cid, versions in seen.items()}

    def complete() -> dict[int, list[Any]] | None:
        h = history()
        want = {
            cid: vals + (["deleted"] if cid in work.deleted else []) for cid, vals in work.expected.items()
        }
        return h if h == want else None

    wait_until(complete, 120, "the offline history to hold every change, in order, without gaps")


@ALL_STORES
def test_kill_9_mid_workload_then_restart_loses_nothing(stack: StackHandle, platform: Platform) -> None:
    first = platform.start_processor("a")
    work = Workload(stack.app, rows=300, updates=2700)
    work.start()
    assert work.halfway.wait(120) and work.error is None
    os.kill(first.pid, signal.SIGKILL)  # mid-batch, no chance to flush or commit
    assert first.wait(10) == -signal.SIGKILL
    platform.start_processor("b")
    work.join(300)
    assert work.error is None and not work.is_alive()
    print(f"{work.total} changes; processor killed at ~{work.total // 2}")
    assert_online_equals_postgres(stack, platform, work)
    assert_offline_has_every_change(platform, work)


def _owners(admin: AdminClient, group: str) -> dict[str, set[tuple[str, int]]]:
    """Each member's partitions, by its client.id (streams/processor.py: it ends with the process's pid)."""
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        m.client_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} for m in desc.members
    }


def _members(admin: AdminClient, group: str) -> list[set[tuple[str, int]]]:
    return list(_owners(admin, group).values())


@ONLINE_STORES
def test_two_processors_share_partitions_and_hand_over_on_stop(
    stack: StackHandle, platform: Platform
) -> None:
    with psycopg.connect(stack.app, autocommit=True) as conn:  # make sure the customers topic exists
        conn.execute(
            "INSERT INTO customers (email, full_name, country, credit_limit) VALUES (%s, 'S', 'GB', 1)",
            (f"seed-{os.urandom(4).hex()}@t",),
        )
    topics = AdminClient({"bootstrap.servers": stack.settings.bootstrap_servers})
    wait_until(
        lambda: platform.topic("public.customers") in topics.list_topics(timeout=5).topics, 30, "the topic"
    )
    a, b = platform.start_processor("a"), platform.start_processor("b")
    group = platform.env["FEATURECTL_PROCESSOR_GROUP"]
    admin = AdminClient({"bootstrap.servers": stack.settings.bootstrap_servers})

    def members(count: int) -> list[set[tuple[str, int]]] | None:
        m = _members(admin, group)
        return m if len(m) == count and all(m) else None

    def state() -> str:
        said = [f"members: {_owners(admin, group)}"]
        for label, proc in (("a", a), ("b", b)):
            said.append(f"processor {label} (exit {proc.poll()}), log tail:\n{platform.log(label)[-3000:]}")
        return "\n".join(said)

    # Two cold starts (imports, registry, joining the group) on a machine running the rest of the suite.
    shared = wait_until(lambda: members(2), 120, "both processors to own partitions", state)
    assert not (shared[0] & shared[1])  # each partition has one owner

    work = Workload(stack.app, rows=200, updates=1800)
    work.start()
    assert work.halfway.wait(120) and work.error is None
    a.send_signal(signal.SIGTERM)
    assert a.wait(60) == 0  # finished its batch, flushed, committed, left the group
    # Cooperative rebalancing hands the partitions over in steps: wait for the final assignment.
    wait_until(
        lambda: (m := members(1)) is not None and m[0] == shared[0] | shared[1],
        60,
        "the survivor to own every partition",
        state,
    )
    work.join(300)
    assert work.error is None
    assert_online_equals_postgres(stack, platform, work)
    assert_offline_has_every_change(platform, work)
    assert "processor stopped after" in platform.log("a") and b.poll() is None


@pytest.mark.parametrize("platform", ["postgres"], indirect=True)
def test_workers_share_the_partitions_and_a_worker_killed_mid_workload_comes_back_losing_nothing(
    stack: StackHandle, platform: Platform
) -> None:
    """``featurectl process --workers 2``: two processes of one group, as two hosts would be."""
    with psycopg.connect(stack.app, autocommit=True) as conn:  # make sure the customers topic exists
        insert_customer(conn, "gold", 1.0)
    admin = AdminClient({"bootstrap.servers": stack.settings.bootstrap_servers})
    wait_until(
        lambda: platform.topic("public.customers") in admin.list_topics(timeout=5).topics, 30, "the topic"
    )
    parent = platform.start_processor("w", "--workers", "2")
    group = platform.env["FEATURECTL_PROCESSOR_GROUP"]

    def members(count: int) -> list[set[tuple[str, int]]] | None:
        m = _members(admin, group)
        return m if len(m) == count and all(m) else None

    def is_worker(p: psutil.Process) -> bool:
        try:
            return "spawn_main" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:  # gone, or killed and not yet reaped by the supervisor
            return False

    def workers() -> list[psutil.Process]:
        return [c for c in psutil.Process(parent.pid).children() if is_worker(c)]

    shared = wait_until(lambda: members(2), 120, "both workers to own partitions")
    assert not (shared[0] & shared[1])  # each partition has one owner
    first = wait_until(lambda: w if len(w := workers()) == 2 else None, 30, "two worker processes")

    work = Workload(stack.app, rows=200, updates=1800)
    work.start()
    assert work.halfway.wait(120) and work.error is None
    first[0].send_signal(signal.SIGKILL)  # its uncommitted batch is read again by whoever owns it next
    (new,) = wait_until(
        lambda: n if len(w := workers()) == 2 and (n := [p for p in w if p not in first]) else None,
        60,
        "a new worker",
    )

    def new_owns_partitions() -> bool:  # the killed one stays listed until its session times out
        owners = _owners(admin, group)
        return len(owners) == 2 and any(c.endswith(f"-{new.pid}") and p for c, p in owners.items())

    wait_until(new_owns_partitions, 120, "the new worker to own partitions")
    work.join(300)
    assert work.error is None
    assert_online_equals_postgres(stack, platform, work)
    assert_offline_has_every_change(platform, work)
    assert parent.poll() is None and "was killed by signal 9; starting it again" in platform.log("w")

    parent.send_signal(signal.SIGTERM)
    assert parent.wait(60) == 0  # each worker finished its batch, committed and left
    assert not any(is_worker(p) for p in first[1:])
    assert platform.log("w").count("processor stopped after") >= 2


def test_changes_deleted_by_retention_before_the_processor_read_them_stop_it_with_the_recovery(
    stack: StackHandle, platform: Platform
) -> None:
    """The processor is down while retention deletes changes it never read (``delete_records`` advances
    the log start offset exactly as retention does, without waiting for the broker's 5-minute check)."""
    topic = platform.topic("public.customers")
    proc = platform.start_processor("first")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        first = insert_customer(conn, "gold", 1.0)
    wait_until(
        lambda: platform.caught_up([topic]) and online_segment(platform, first) == "gold",
        90,
        "the first change",
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    with psycopg.connect(stack.app, autocommit=True) as conn:
        lost = insert_customer(conn, "silver", 2.0)  # read by nobody before retention deletes it
    read_until(stack.settings, [topic], lambda evs: any((e.key or {}).get("id") == lost for e in evs), 60)
    admin = AdminClient({"bootstrap.servers": stack.settings.bootstrap_servers})
    consumer = Consumer({"bootstrap.servers": stack.settings.bootstrap_servers, "group.id": unique("probe")})
    parts = [TopicPartition(topic, p) for p in admin.list_topics(topic, timeout=10).topics[topic].partitions]
    ends = [
        TopicPartition(topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=10)[1]) for tp in parts
    ]
    consumer.close()
    for future in admin.delete_records(ends).values():
        future.result(30)

    stopped = platform.start_processor("second")
    assert stopped.wait(120) == 1, "the processor went on past the deleted changes"
    log = platform.log("second")
    assert f"{topic}[" in log and "are gone" in log and "--accept-gaps" in log and "verify --repair" in log, (
        log
    )

    platform.start_processor("accepting", "--accept-gaps")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        after = insert_customer(conn, "gold", 3.0)
    wait_until(lambda: online_segment(platform, after) == "gold", 90, "a change after the gap")
    assert "as --accept-gaps asks" in platform.log("accepting")
    platform.stop_all()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("DELETE FROM customers WHERE id = ANY(%s)", ([first, lost, after],))


def online_segment(platform: Platform, cid: int) -> Any:
    return platform.online("customer_profile", "customer_id", [cid], ["segment"])["segment"][0]
