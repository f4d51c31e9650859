"""Each table's latest incremental snapshot, folded from Debezium's notifications (jobs/snapshot.py)."""

from __future__ import annotations

from typing import Any

from jobs.snapshot import snapshot_outcomes


def note(sid: str, kind: str, at: int, **extra: str) -> dict[str, Any]:
    return {
        "aggregate_type": "Incremental Snapshot",
        "id": sid,
        "type": kind,
        "timestamp": at,
        "additional_data": {"connector_name": "shop", **extra},
    }


def scan(sid: str, table: str, at: int, status: str = "SUCCEEDED", rows: str = "50") -> dict[str, Any]:
    return note(
        sid, "TABLE_SCAN_COMPLETED", at, scanned_collection=table, status=status, total_rows_scanned=rows
    )


def test_completed_skipped_stopped_and_running_snapshots() -> None:
    notes = [
        note("a", "STARTED", 1, data_collections="shop.public.customers,shop.public.orders"),
        note("a", "IN_PROGRESS", 2, current_collection_in_progress="shop.public.customers"),
        scan("a", "shop.public.customers", 3),
        scan("a", "shop.public.orders", 4, status="NO_PRIMARY_KEY", rows="0"),
        note("a", "COMPLETED", 5),
        note("b", "STARTED", 6, data_collections="public.products"),
        note("b", "ABORTED", 7, data_collections="public.products"),
        note("c", "STARTED", 8, data_collections="public.listings"),
        note("c", "IN_PROGRESS", 9),
        note("d", "STARTED", 10, data_collections="public.stock"),
        note("d", "COMPLETED", 11),  # Debezium skipped it, logging why, and said COMPLETED
        {"aggregate_type": "Initial Snapshot", "id": "x", "type": "COMPLETED", "timestamp": 12},
    ]
    got = snapshot_outcomes(notes)
    assert {t: s.state for t, s in got.items()} == {
        "public.customers": "completed",
        "public.orders": "skipped",
        "public.products": "stopped",
        "public.listings": "running",
        "public.stock": "skipped",
    }
    assert "NO_PRIMARY_KEY" in got["public.orders"].detail and "primary key" in got["public.orders"].detail
    assert got["public.customers"].detail == "50 rows"
    assert got["public.listings"].last_note_ms == 9  # when Debezium last reported on it: stall age


def test_a_later_snapshot_replaces_an_earlier_outcome_and_an_abort_of_others_leaves_a_table_alone() -> None:
    notes = [
        note("a", "STARTED", 1, data_collections="public.customers"),
        note("a", "ABORTED", 2),  # stop-snapshot without tables: all of it
        note("b", "STARTED", 3, data_collections="public.customers,public.orders"),
        scan("b", "public.customers", 4),
        note("b", "ABORTED", 5, data_collections="public.orders"),
        note("b", "PAUSED", 6),
    ]
    got = snapshot_outcomes(notes)
    assert got["public.customers"].state == "completed" and got["public.customers"].signal_id == "b"
    assert got["public.orders"].state == "stopped"


def test_notes_read_across_partitions_fold_in_time_order_and_an_abort_under_its_own_id_stops_the_table() -> (
    None
):
    """As Debezium 3 wrote them for a stalled snapshot stopped by ``featurectl snapshot --stall`` and one
    requested after it (a 4-partition notification topic, read partition by partition)."""
    later = [
        note("ok", "STARTED", 40, data_collections="public.keyed"),
        scan("ok", "public.keyed", 41),
        note("ok", "COMPLETED", 41),
    ]
    abort = [note("f00d-uuid", "ABORTED", 31, data_collections="public.keyed")]
    stalled = [
        note("stall", "STARTED", 10, data_collections="public.keyed"),
        note("stall", "IN_PROGRESS", 30, current_collection_in_progress="public.keyed"),
        note("stall", "COMPLETED", 30),  # the table was stopped before its scan completed
    ]
    assert snapshot_outcomes(later + abort + stalled)["public.keyed"].state == "completed"
    got = snapshot_outcomes(stalled + abort)["public.keyed"]
    assert (got.state, got.signal_id, got.last_note_ms) == ("stopped", "stall", 31)
