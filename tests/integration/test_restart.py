"""Restarting Kafka Connect, and separately the broker, while rows keep changing loses nothing."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

import psycopg
from psycopg import sql

from tests.integration.conftest import StackHandle
from tests.integration.helpers import Capture, read_until, wait_connector_running

KEYS = 8


class Writer(threading.Thread):
    """Bumps ``v`` of KEYS rows, one committed transaction per change, until stopped."""

    def __init__(self, conninfo: str, table: str) -> None:
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.table = sql.Identifier(table)
        self.stop_flag = threading.Event()
        self.versions = dict.fromkeys(range(KEYS), 0)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                for k in range(KEYS):
                    conn.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (%s, 1)").format(self.table), (k,))
                    self.versions[k] = 1
                i = 0
                while not self.stop_flag.is_set():
                    k = i % KEYS
                    conn.execute(sql.SQL("UPDATE {} SET v = v + 1 WHERE id = %s").format(self.table), (k,))
                    self.versions[k] += 1
                    i += 1
                    self.stop_flag.wait(0.005)  # a steady trickle, not a flood
        except BaseException as exc:
            self.error = exc

    def changes(self) -> int:
        return sum(self.versions.values())


def _restart_during_writes(stack: StackHandle, cap: Capture, restart: Callable[[], None]) -> None:
    writer = Writer(stack.app, cap.table("restart_rows"))
    writer.start()
    try:
        seen_before = writer.changes()
        read_until(stack.settings, [cap.topic("restart_rows")], lambda evs: len(evs) > 20)
        restart()
        wait_connector_running(stack.settings, cap.definition.name)
        # keep writing after recovery, so changes made during and after the outage are both checked
        target = writer.changes() + 50
        while writer.changes() < target and writer.is_alive():
            writer.stop_flag.wait(0.05)
    finally:
        writer.stop_flag.set()
        writer.join(30)
    assert writer.error is None, writer.error
    assert writer.changes() > seen_before
    final = dict(writer.versions)

    def complete(evs: list) -> bool:  # type: ignore[type-arg]
        last: dict[int, int] = {}
        for e in evs:
            if e.after is not None:
                last[e.key["id"]] = max(last.get(e.key["id"], 0), e.after["v"])
        return last == final

    events = read_until(stack.settings, [cap.topic("restart_rows")], complete, timeout_s=180)
    per_key: dict[int, list[int]] = defaultdict(list)
    seen_lsn: set[tuple[int, int | None]] = set()
    duplicates = 0
    for e in events:
        if e.after is None:
            continue
        ident = (e.key["id"], e.lsn)  # type: ignore[index]
        if ident in seen_lsn:
            duplicates += 1  # at-least-once: a re-sent change after a restart, same LSN
            continue
        seen_lsn.add(ident)
        per_key[e.key["id"]].append(e.after["v"])  # type: ignore[index]
    for k, versions in per_key.items():
        assert versions == list(range(1, final[k] + 1)), f"key {k}: changes missing or out of order"
    print(f"{sum(final.values())} changes, all present in per-key order; {duplicates} re-sent duplicates")


def test_connect_restart_loses_no_change(stack: StackHandle, capture) -> None:  # type: ignore[no-untyped-def]
    cap: Capture = capture({"restart_rows": "id int PRIMARY KEY, v int NOT NULL"})

    def restart_connect() -> None:
        assert stack.stack.connect.stop()
        stack.stack.connect.start()

    _restart_during_writes(stack, cap, restart_connect)


def test_broker_restart_loses_no_change(stack: StackHandle, capture) -> None:  # type: ignore[no-untyped-def]
    cap: Capture = capture({"restart_rows": "id int PRIMARY KEY, v int NOT NULL"})

    def restart_broker() -> None:
        assert stack.stack.kafka.stop()
        stack.stack.kafka.start()

    _restart_during_writes(stack, cap, restart_broker)
