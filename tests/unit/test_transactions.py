"""Atomic visibility of source transactions (stores/transactions.py) against a brute-force model: after every
flush of any writer, in any interleaving, what a reader sees equals the source after some prefix of its
transactions (never half of one); once everything is written, the source's final state."""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from feast import FeatureStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stores import transactions
from stores.feast_layout import FeastLayoutSink
from stores.registry import kinds, open_online_sink
from stores.sink import UPSERT, SinkRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = range(1, 6)


@dataclass(frozen=True)
class Change:
    txn: int  # index in commit order, from 1
    order: int  # total_order in its transaction, from 1
    key: int | None  # None: a change of a table no view reads (counted, no row)
    value: float


def sink_row(c: Change) -> SinkRow:
    assert c.key is not None
    return SinkRow(
        "customer_profile",
        UPSERT,
        {"customer_id": c.key},
        {"country": "GB", "segment": "gold", "credit_limit": c.value, "birth_date": None},
        T0 + timedelta(seconds=c.txn),
        100 * c.txn,  # commit position: equal within a transaction, growing in commit order
        "u",
        f"t[{c.key}] offset={c.txn}.{c.order}",
        version_minor=c.order,
        txn=f"tx{c.txn}",
    )


@st.composite
def workloads(draw: Any) -> tuple[list[list[Change]], int, list[tuple[int, int]]]:
    """Transactions (each a list of changes), the number of writers, and a schedule of (writer, items to take
    from its queue before it flushes)."""
    transactions = []
    value = 0.0
    for t in range(1, draw(st.integers(1, 7)) + 1):
        changes = []
        for order in range(1, draw(st.integers(1, 4)) + 1):
            value += 1
            changes.append(Change(t, order, draw(st.sampled_from([*KEYS, None])), value))
        transactions.append(changes)
    writers = draw(st.integers(1, 3))
    schedule = draw(st.lists(st.tuples(st.integers(0, writers - 1), st.integers(0, 4)), max_size=30))
    return transactions, writers, schedule


def state_after(transactions: list[list[Change]], k: int) -> dict[int, float | None]:
    state: dict[int, float | None] = dict.fromkeys(KEYS, -1.0)
    for changes in transactions[:k]:
        for c in changes:
            if c.key is not None:
                state[c.key] = c.value
    return state


def visible(store: FeatureStore) -> dict[int, float | None]:
    got = store.get_online_features(
        features=["customer_profile:credit_limit"], entity_rows=[{"customer_id": k} for k in KEYS]
    ).to_dict()
    return dict(zip(got["customer_id"], got["credit_limit"], strict=True))


@pytest.mark.parametrize(
    "fresh_store", [k.name for k in kinds() if k.atomic_source_transactions], indirect=True
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workloads(), st.randoms(use_true_random=False))
def test_a_reader_sees_a_prefix_of_the_source_transactions_after_every_flush(
    fresh_store: FeatureStore, workload: Any, rng: Any
) -> None:
    transactions, writers, schedule = workload
    sinks: list[FeastLayoutSink] = [open_online_sink(fresh_store) for _ in range(writers)]  # type: ignore[misc]
    try:
        sinks[0].reset()  # hypothesis runs every example on the same store
        # Before the stream: every entity at -1, written without a transaction (a snapshot).
        sinks[0].add([
            SinkRow("customer_profile", UPSERT, {"customer_id": k}, {"credit_limit": -1.0, "segment": "gold",
                    "country": "GB", "birth_date": None}, T0, 1, "r", "snapshot", version_minor=-1)
            for k in KEYS
        ])  # fmt: skip
        sinks[0].flush()
        states = [state_after(transactions, k) for k in range(len(transactions) + 1)]
        # Each writer's queue: the changes of the partitions it owns (key % writers; an unread table's change
        # goes to writer 0), in commit order per key but interleaved at random across keys; writer 0 reads
        # the transaction topic too (ENDs in commit order, anywhere among its changes).
        queues: list[list[tuple[str, Any]]] = [[] for _ in range(writers)]
        for changes in transactions:
            for c in changes:
                queues[(c.key or 0) % writers].append(("change", c))
        for w, queue in enumerate(queues):
            by_key: dict[Any, list[tuple[str, Any]]] = {}
            for item in queue:
                by_key.setdefault(item[1].key, []).append(item)
            if w == 0:
                by_key["ends"] = [("end", (t + 1, len(changes))) for t, changes in enumerate(transactions)]
            merged: list[tuple[str, Any]] = []
            while any(by_key.values()):
                lane = rng.choice([k for k, v in by_key.items() if v])
                merged.append(by_key[lane].pop(0))
            queues[w] = merged

        def feed(w: int, n: int) -> None:
            for kind, item in queues[w][:n]:
                if kind == "end":
                    sinks[w].add_end(f"tx{item[0]}", item[1], item[0])
                else:
                    sinks[w].add_seen(f"tx{item.txn}", item.order, 100 * item.txn)
                    if item.key is not None:
                        sinks[w].add([sink_row(item)])
            del queues[w][:n]
            sinks[w].flush()
            seen = visible(fresh_store)
            assert seen in states, (seen, states)

        for w, n in schedule:
            feed(w, n)
        for w in range(writers):  # the rest, then one more look each: all released
            feed(w, len(queues[w]))
        for w in range(writers):
            feed(w, 0)
        assert visible(fresh_store) == states[-1]
    finally:
        for s in sinks:
            s.close()


@pytest.mark.parametrize(
    "fresh_store", [k.name for k in kinds() if k.atomic_source_transactions], indirect=True
)
def test_a_transaction_past_the_row_limit_is_made_visible_as_it_comes_and_counted(
    fresh_store: FeatureStore,
) -> None:
    sink: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    try:
        sink.reset()
        sink.limit_transactions(True, max_rows=2, max_wait_s=600)
        changes = [Change(1, order, key, 10.0 * key) for order, key in enumerate(KEYS, 1)]
        for c in changes[:3]:  # 3 rows held > 2: given up on, visible at once
            sink.add_seen("tx1", c.order, 100)
            sink.add([sink_row(c)])
        sink.flush()
        assert [visible(fresh_store)[k] for k in (1, 2, 3)] == [10.0, 20.0, 30.0]
        for c in changes[3:]:  # the rest comes straight through; the END releases nothing left
            sink.add_seen("tx1", c.order, 100)
            sink.add([sink_row(c)])
        sink.add_end("tx1", len(changes), 1)
        sink.flush()
        assert visible(fresh_store) == {k: 10.0 * k for k in KEYS}
        state = sink.transaction_state()
        assert state is not None and state.partial == 1 and state.held_rows == 0 and state.waiting == 0
    finally:
        sink.close()


@pytest.mark.parametrize(
    "fresh_store", [k.name for k in kinds() if k.atomic_source_transactions], indirect=True
)
def test_an_end_waiting_past_its_limit_is_released_with_what_arrived_and_a_late_change_applies_at_once(
    fresh_store: FeatureStore,
) -> None:
    sink: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    try:
        sink.reset()
        sink.limit_transactions(True, max_rows=100, max_wait_s=0.2)
        first, late = Change(1, 1, 1, 11.0), Change(1, 2, 2, 22.0)
        sink.add_seen("tx1", 1, 100)
        sink.add([sink_row(first)])
        sink.add_end("tx1", 2, 1)
        sink.flush()
        assert visible(fresh_store)[1] is None  # held: its other change has not arrived
        time.sleep(0.3)
        sink.flush()  # an idle flush looks again
        assert visible(fresh_store)[1] == 11.0
        sink.add_seen("tx1", 2, 100)  # at or below the frontier now: not counted, applied at once
        sink.add([sink_row(late)])
        sink.flush()
        assert visible(fresh_store)[2] == 22.0
        state = sink.transaction_state()
        assert state is not None and state.partial == 1 and state.held_rows == 0 and state.waiting == 0
    finally:
        sink.close()


@pytest.mark.parametrize(
    "fresh_store", [k.name for k in kinds() if k.atomic_source_transactions], indirect=True
)
def test_ends_running_ahead_of_their_changes_in_a_catch_up_wait_from_the_frontier_s_last_move(
    fresh_store: FeatureStore,
) -> None:
    sink: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    try:
        sink.reset()
        sink.limit_transactions(True, max_rows=100, max_wait_s=1.0)
        # Both ENDs read long before their changes (a backlog's transaction topic drained first).
        sink.add_end("tx1", 1, 1)
        sink.add_end("tx2", 1, 2)
        sink.flush()
        time.sleep(1.2)
        sink.add_seen("tx1", 1, 100)
        sink.add([sink_row(Change(1, 1, 1, 11.0))])
        sink.flush()  # tx1 complete: released, the frontier moves; tx2 has waited 1.2 s since its END, not since
        assert visible(fresh_store)[1] == 11.0
        sink.flush()
        assert visible(fresh_store)[2] is None  # still held whole, not given up on
        sink.add_seen("tx2", 1, 200)
        sink.add([sink_row(Change(2, 1, 2, 22.0))])
        sink.flush()
        assert visible(fresh_store)[2] == 22.0
        state = sink.transaction_state()
        assert state is not None and state.partial == 0 and state.waiting == 0
    finally:
        sink.close()


@pytest.mark.parametrize(
    "fresh_store", [k.name for k in kinds() if k.atomic_source_transactions], indirect=True
)
def test_a_transaction_read_whole_behind_an_incomplete_one_is_released_by_the_writer_that_completes_the_first(
    fresh_store: FeatureStore,
) -> None:
    """A batch that reads a transaction whole does not store its seen changes when it releases it; when an
    earlier transaction keeps it waiting, they must be stored, or another writer can never count it complete."""
    first: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    second: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    try:
        first.reset()
        for s in (first, second):
            s.limit_transactions(True, max_rows=100, max_wait_s=600)
        # Writer 1 reads the transaction topic, tx1's change of key 1, and all of tx2 (keys 3 and 5); tx1's change of
        # key 2 is in writer 2's partition, not read yet.
        first.add_seen("tx1", 1, 100)
        first.add([sink_row(Change(1, 1, 1, 11.0))])
        for order, key in ((1, 3), (2, 5)):
            first.add_seen("tx2", order, 200)
            first.add([sink_row(Change(2, order, key, 20.0 + key))])
        first.add_end("tx1", 2, 1)
        first.add_end("tx2", 2, 2)
        first.flush()
        assert set(visible(fresh_store).values()) == {None}  # tx1 incomplete; tx2 behind it
        second.add_seen("tx1", 2, 100)
        second.add([sink_row(Change(1, 2, 2, 12.0))])
        second.flush()  # completes tx1, and counts tx2 from what writer 1 stored: both released
        assert visible(fresh_store) == {1: 11.0, 2: 12.0, 3: 23.0, 4: None, 5: 25.0}
        state = second.transaction_state()
        assert state is not None and state.waiting == 0 and state.held_rows == 0 and state.partial == 0
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "fresh_store", [k.name for k in kinds() if k.atomic_source_transactions], indirect=True
)
def test_after_an_accepted_retention_gap_a_transaction_from_before_it_is_not_waited_for_long(
    fresh_store: FeatureStore,
) -> None:
    sink: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    try:
        sink.reset()
        sink.limit_transactions(True, max_rows=100, max_wait_s=600)
        assert sink._gate is not None
        sink._gate.gap_wait_s = 0.3
        sink.add_end("tx1", 1, 1)  # its change was deleted by retention: it never comes
        sink.add_seen("tx2", 1, 200)
        sink.add([sink_row(Change(2, 1, 2, 22.0))])
        sink.add_end("tx2", 1, 2)
        sink.flush()
        assert visible(fresh_store)[2] is None  # behind tx1
        sink.accept_gap(2)  # `process --accept-gaps`: the transaction topic ended at 2 (tx1 below it)
        time.sleep(0.4)
        sink.flush()
        assert visible(fresh_store)[2] == 22.0  # tx1 given up on after gap_wait_s, not max_wait_s; tx2 whole
        state = sink.transaction_state()
        assert state is not None and state.partial == 1 and state.waiting == 0
    finally:
        sink.close()


@pytest.mark.parametrize("fresh_store", ["sqlite", "postgres"], indirect=True)
def test_rows_held_by_the_earlier_layout_are_released_after_an_upgrade(fresh_store: FeatureStore) -> None:
    """A row held one to a table row (OLD_HELD, before rows were packed per batch) and its change counted one
    to a row (SEEN, before Postgres kept arrays) when the processor is upgraded are moved on open and released
    with their transaction, not lost."""
    sink: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    row = sink_row(Change(1, 1, 1, 11.0))
    try:
        sink.reset()
        assert sink._gate is not None
        mark = sink._gate.dialect.mark
        conn: Any = sink._conn  # type: ignore[attr-defined]
        conn.execute(
            f"CREATE TABLE {transactions.OLD_HELD} (txid TEXT NOT NULL, source TEXT NOT NULL, view TEXT NOT NULL, "
            f"row_data {sink._gate.dialect.blob} NOT NULL, PRIMARY KEY (txid, source, view))"
        )
        conn.execute(
            f"INSERT INTO {transactions.OLD_HELD} VALUES ({mark}, {mark}, {mark}, {mark})",
            ("tx1", row.source, row.view, pickle.dumps(row)),
        )
        # Seen changes as an earlier version kept them too: a row each (Postgres keeps arrays now).
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {transactions.SEEN} (txid TEXT NOT NULL, total_order BIGINT NOT NULL, "
            "version BIGINT NOT NULL, PRIMARY KEY (txid, total_order))"
        )
        conn.execute(f"INSERT INTO {transactions.SEEN} VALUES ({mark}, 1, 100)", ("tx1",))
        conn.commit()
    finally:
        sink.close()
    sink = open_online_sink(fresh_store)  # type: ignore[assignment]
    try:
        assert sink.transaction_state() == transactions.State(0, None, 1, 0)
        sink.add_end("tx1", 1, 1)
        sink.flush()
        assert visible(fresh_store)[1] == 11.0
        assert sink.transaction_state() == transactions.State(0, None, 0, 0)
    finally:
        sink.close()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["pack", "unpack", "unpack_other", "forget"]),
            st.integers(1, 6),  # transaction (its commit position 100 * t)
            st.integers(1, 4),  # rows in the part
        ),
        max_size=40,
    ),
    st.integers(1, 10),
)
def test_a_writer_s_remembered_parts_unpack_as_their_blobs_do_within_the_row_limit(
    ops: list[tuple[str, int, int]], max_rows: int
) -> None:
    """``Packed`` against ``unpack`` itself: whatever was packed, dropped or released, the rows a blob gives are
    the rows unpickling it gives, and no more than ``max_rows`` rows are remembered."""
    packed, blobs = transactions.Packed(), []
    for op, t, n in ops:
        part = [sink_row(Change(t, order, 1 + order % 5, float(order))) for order in range(1, n + 1)]
        if op == "pack":
            blobs.append(packed.pack(part, max_rows))
        elif op == "unpack" and blobs:
            blob = blobs.pop(t % len(blobs))
            assert packed.unpack(blob) == transactions.unpack(blob)
        elif op == "unpack_other":  # packed by another writer
            blob = transactions.pack(part)
            assert packed.unpack(blob) == part
        elif op == "forget":
            packed.forget_released(100 * t)
        assert packed._count == sum(len(rows) for _, rows in packed._rows.values()) <= max_rows
