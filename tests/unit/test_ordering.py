"""The ordering model (stores/ordering.py), on the positions Debezium 3.7 gave for a measured run.

The run: txn 735 updates a product twice; txn 736 updates it, stays open across an incremental
snapshot of the row (which reads the old price), then commits.
"""

from __future__ import annotations

import json
from typing import Any

from stores.ordering import version_of
from stores.sink import UPSERT, SinkRow
from streams.events import decode
from tests.unit.fakes import MemorySink, Msg


def event(op: str, lsn: int | None, sequence: list[str] | None, offset: int = 0) -> Any:
    source = {
        "schema": "public",
        "table": "products",
        "ts_us": 1,
        "lsn": lsn,
        "sequence": json.dumps(sequence),
    }
    value = {"op": op, "before": None, "after": {"id": 1, "price": "1.00"}, "source": source}
    return decode(Msg("shop.public.products", 0, offset, b'{"id": 1}', json.dumps(value).encode()))


TXN_735_FIRST = event("u", 26514136, ["26514136", "26514136"])
TXN_735_SECOND = event("u", 26514336, ["26514136", "26514336"])
SNAPSHOT_READ = event("r", None, ["26515648", "26515648"])  # reads the price before txn 736
TXN_736 = event("u", 26514584, ["26516984", "26514584"])  # written before the read, committed after


def test_sequence_is_decoded_from_its_json_string() -> None:
    assert TXN_736.sequence == (26516984, 26514584)
    assert event("u", 5, None).sequence is None


def test_within_a_transaction_the_change_position_orders() -> None:
    assert version_of(TXN_735_FIRST) < version_of(TXN_735_SECOND)


def test_a_snapshot_read_is_newer_than_every_change_committed_before_its_window() -> None:
    assert version_of(SNAPSHOT_READ) > version_of(TXN_735_SECOND)


def test_a_change_committed_after_the_read_wins_although_its_lsn_is_lower() -> None:
    assert TXN_736.lsn is not None and TXN_736.lsn < 26515648  # lsn order would let the stale read win
    assert version_of(TXN_736) > version_of(SNAPSHOT_READ)


def test_a_read_loses_to_a_change_whose_commit_position_equals_the_reads() -> None:
    right_after = event("u", 26515000, ["26515648", "26515000"])  # the next commit after the window
    assert version_of(right_after) > version_of(SNAPSHOT_READ)


def test_events_without_a_sequence_fall_back_to_their_lsn() -> None:
    assert version_of(event("u", 900, None)) == (900, 900)
    assert version_of(event("r", 900, None)) == (900, -1)


def row(ev: Any, price: float) -> SinkRow:
    major, minor = version_of(ev)
    return SinkRow(
        "p", UPSERT, {"product_id": 1}, {"price": price}, ev and None, major, ev.op, "t", None, minor
    )  # type: ignore[arg-type]


def test_in_a_store_the_read_repairs_a_stale_row_and_the_later_commit_stands() -> None:
    store = MemorySink()
    store.add([row(TXN_735_SECOND, 999.0)])  # a wrong value stored by the last change before the read
    store.flush()
    store.add([row(SNAPSHOT_READ, 5.0)])
    assert [r.features["price"] for r in store.flush()] == [5.0]  # repaired
    store.add([row(TXN_736, 100.0)])
    store.flush()
    store.add([row(SNAPSHOT_READ, 5.0)])  # the read again (replay, re-delivery): must not win
    assert store.flush() == []
    assert store.current_features("p", [{"product_id": 1}]) == [{"price": 100.0}]
