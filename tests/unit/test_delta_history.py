"""The Delta history: stream positions written once across processors, compaction by day, and Feast's
point-in-time join over it through the DuckDB offline store (stores/history/duckdb_store.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable
from feast import FeatureStore

from jobs.compact import compact
from stores.history.reader import History
from stores.history.sink import HistorySink
from stores.sink import DELETE, UPSERT, SinkRow

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
VIEW = "customer_profile"


def row(
    cid: int, offset: int, segment: str | None, at: datetime, op: str = UPSERT, minor: int = 0
) -> SinkRow:
    features = {} if op == DELETE else {"segment": segment, "country": "GB", "credit_limit": 10.0}
    return SinkRow(
        VIEW, op, {"customer_id": cid}, features, at, offset, "u", f"shop.public.customers[0] offset={offset}",
        version_minor=minor, position=("shop.public.customers", 0, offset),
    )  # fmt: skip


def history_rows(store: FeatureStore) -> list[dict[str, Any]]:
    rows = History(store, store.get_feature_view(VIEW)).dataset().to_table().to_pylist()
    return sorted(rows, key=lambda r: (r["customer_id"], r["event_timestamp"], r["cdc_version"]))


def topic_id(_topic: str) -> str:
    return "incarnation-1"


def test_a_batch_re_read_by_another_processor_is_written_once(sqlite_store: FeatureStore) -> None:
    first, second = (HistorySink(sqlite_store, w, incarnation=topic_id) for w in ("a", "b"))
    batch = [row(1, 10, "silver", T0), row(2, 11, "gold", T0), row(1, 12, "gold", T0 + timedelta(seconds=1))]
    first.add(batch)
    assert len(first.flush()) == 3
    # Killed before committing offsets: the group hands the partition to `second`, which reads 10..13.
    second.add([*batch, row(3, 13, "bronze", T0)])
    assert [r.position[2] for r in second.flush()] == [13]  # type: ignore[index]
    assert [(r["customer_id"], r["segment"]) for r in history_rows(sqlite_store)] == [
        (1, "silver"), (1, "gold"), (2, "gold"), (3, "bronze"),
    ]  # fmt: skip


def test_replayed_rows_and_a_new_topic_incarnation_are_written_again(sqlite_store: FeatureStore) -> None:
    live = HistorySink(sqlite_store, "live", incarnation=topic_id)
    live.add([row(1, 10, "silver", T0), row(2, 11, "gold", T0)])
    live.flush()
    # A dead letter at offset 5 of the same partition, replayed later: no marks, so it is written.
    replay = HistorySink(sqlite_store, "replay")
    replay.add([row(4, 5, "replayed", T0)])
    assert len(replay.flush()) == 1
    # The topic was deleted and created again: offsets restart, under a new topic id.
    reborn = HistorySink(sqlite_store, "reborn", incarnation=lambda _t: "incarnation-2")
    reborn.add([row(5, 0, "after the wipe", T0 + timedelta(seconds=5))])
    assert len(reborn.flush()) == 1
    assert {r["segment"] for r in history_rows(sqlite_store)} == {
        "silver",
        "gold",
        "replayed",
        "after the wipe",
    }


def test_two_processors_committing_the_same_positions_at_once_write_them_once(
    sqlite_store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stalled owner committed while the new owner held a snapshot from before: Delta's conflict check
    on the application transaction makes the new owner re-read the marks instead of writing twice."""
    stale, winner = (HistorySink(sqlite_store, w, incarnation=topic_id) for w in ("stale", "winner"))
    stale.add([row(9, 1, "first", T0)])
    stale.flush()
    stale._delta[VIEW]._load()  # `stale` holds the table at this version
    batch = [row(1, 10, "silver", T0), row(2, 11, "gold", T0)]
    winner.add(batch)
    winner.flush()
    stale_table = stale._delta[VIEW]._table
    assert stale_table is not None
    monkeypatch.setattr(type(stale_table), "update_incremental", lambda self: None)  # keeps the old snapshot
    stale.add(batch)
    assert stale.flush() == []
    assert [r["customer_id"] for r in history_rows(sqlite_store)] == [1, 2, 9]


def test_compaction_rewrites_crowded_days_once_per_change_and_keeps_the_training_set(
    sqlite_store: FeatureStore,
) -> None:
    view = sqlite_store.get_feature_view(VIEW)
    sink = HistorySink(sqlite_store, "w")  # no marks: replays and re-runs may write a row twice
    day2 = T0 + timedelta(days=1)
    batches = [
        [row(1, 1, "a", T0), row(2, 2, "a", T0 + timedelta(minutes=1))],
        [row(1, 3, "b", T0 + timedelta(hours=1))],
        [row(1, 3, "b", T0 + timedelta(hours=1))],  # the same change again
        [row(2, 4, "mid-transaction", day2), replace(row(2, 4, "end of transaction", day2), version_minor=1)],
        [row(1, 5, None, day2 + timedelta(minutes=5), op=DELETE)],
    ]
    for batch in batches:
        sink.add(batch)
        sink.flush()
        sink.committed()
    labels = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 1],
            "event_timestamp": [
                T0 + timedelta(minutes=30), T0 + timedelta(hours=2), day2 + timedelta(hours=1),
                T0 + timedelta(hours=3), day2 + timedelta(hours=1), T0 - timedelta(hours=1),
            ],
        }
    )  # fmt: skip

    def training_set() -> list[Any]:
        df = sqlite_store.get_historical_features(labels, [f"{VIEW}:segment"]).to_df()
        df = df.sort_values(["customer_id", "event_timestamp"])
        return [None if pd.isna(v) else v for v in df["segment"]]

    before = training_set()
    # Two states of one transaction share its commit time: Feast's join picks either (the reason
    # compaction keeps only the last); everything else is decided.
    assert before[:5] == [None, "a", "b", None, "a"] and before[5] in (
        "mid-transaction",
        "end of transaction",
    )
    table = DeltaTable(str(History(sqlite_store, view).path))
    assert len(table.file_uris()) == 5
    report = compact(sqlite_store, view, keep_s=0)
    assert (report.days, report.days_deferred, report.duplicates, report.superseded) == (2, 0, 1, 1)
    assert report.files_after == 2 and report.vacuumed == 5  # one file per day; replaced files removed
    rows = history_rows(sqlite_store)
    assert len(rows) == report.rows_after == 5
    assert training_set() == [None, "a", "b", None, "a", "end of transaction"]
    again = compact(sqlite_store, view, keep_s=0)
    assert again.days == 0 and again.files_after == 2  # nothing landed: nothing rewritten


def test_compaction_keeps_a_row_appended_to_the_day_it_is_rewriting(
    sqlite_store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.compact as compact_module

    view = sqlite_store.get_feature_view(VIEW)
    sink = HistorySink(sqlite_store, "w", incarnation=topic_id)
    for i in range(3):
        sink.add([row(i, i, "early", T0 + timedelta(minutes=i))])
        sink.flush()
    dedup, calls = compact_module._dedup, []

    def dedup_while_a_processor_appends(*args: Any) -> Any:
        if not calls:  # the processor commits between compaction's read and its commit
            sink.add([row(7, 100, "landed during compaction", T0 + timedelta(minutes=30))])
            sink.flush()
        calls.append(1)
        return dedup(*args)

    monkeypatch.setattr(compact_module, "_dedup", dedup_while_a_processor_appends)
    report = compact(sqlite_store, view, keep_s=0)
    assert len(calls) == 2 and report.days == 1  # lost the first commit, rewrote the day again
    assert {r["customer_id"] for r in history_rows(sqlite_store)} == {0, 1, 2, 7}


def test_a_feature_added_later_reads_as_null_in_older_history(sqlite_store: FeatureStore) -> None:
    import pyarrow as pa

    view = sqlite_store.get_feature_view(VIEW)
    history = History(sqlite_store, view)
    sink = HistorySink(sqlite_store, "w")
    sink.add([row(1, 1, "old", T0)])
    sink.flush()
    # A later declaration adds a column: the next append merges it into the table's schema.
    from deltalake import write_deltalake

    extra = history.schema.append(pa.field("loyalty", pa.int64()))
    newer = pa.Table.from_pylist(
        [{**history_rows(sqlite_store)[0], "customer_id": 2, "loyalty": 3}], schema=extra
    )
    write_deltalake(str(history.path), newer, mode="append", schema_mode="merge")
    assert [r["segment"] for r in history_rows(sqlite_store)] == ["old", "old"]
    loyalty = DeltaTable(str(history.path)).to_pyarrow_table().sort_by("customer_id")["loyalty"].to_pylist()
    assert loyalty == [None, 3]


def test_a_history_table_that_cannot_be_written_is_a_transient_failure_naming_it(
    sqlite_store: FeatureStore,
) -> None:
    """Storage trouble is never the rows' fault: the batch is retried (not dead-lettered), and the next
    attempt after the path is back writes normally."""
    from core.errors import TransientError
    from streams.faults import is_transient

    sink = HistorySink(sqlite_store, "w", incarnation=topic_id)
    sink.add([row(1, 1, "first", T0)])
    sink.flush()
    path = History(sqlite_store, sqlite_store.get_feature_view(VIEW)).path
    held = path.with_name("held")
    path.rename(held)
    path.write_text("not a directory")
    sink.add([row(1, 2, "second", T0 + timedelta(seconds=1))])
    with pytest.raises(TransientError, match=str(path)) as failed:
        sink.flush()
    assert is_transient(failed.value)
    sink.discard()
    path.unlink()
    held.rename(path)
    sink.add([row(1, 2, "second", T0 + timedelta(seconds=1))])
    assert len(sink.flush()) == 1
    assert [r["segment"] for r in history_rows(sqlite_store)] == ["first", "second"]


def test_materialize_reads_a_delta_history_and_incrementally_only_new_commits(
    sqlite_store: FeatureStore, tmp_path: Any
) -> None:
    from jobs.materialize import Materializer

    view = sqlite_store.get_feature_view(VIEW)
    sink = HistorySink(sqlite_store, "w", incarnation=topic_id)
    sink.add([row(1, 1, "a", T0), row(2, 2, "b", T0 + timedelta(days=1))])  # two day partitions
    sink.flush()
    jobs = Materializer(sqlite_store, tmp_path / "jobs")
    first = jobs.run(view, incremental=True)
    assert (first.files, first.entities, first.applied) == (2, 2, 2)
    sink.add([row(1, 3, None, T0 + timedelta(days=1, hours=1), op=DELETE)])
    sink.flush()
    second = jobs.run(view, incremental=True)
    assert (second.files, second.history_rows, second.entities) == (1, 1, 1)
    online = sqlite_store.get_online_features([f"{VIEW}:segment"], [{"customer_id": 1}, {"customer_id": 2}])
    assert online.to_dict()["segment"] == [None, "b"]


def test_a_training_set_has_the_last_of_a_transactions_changes_to_a_row(sqlite_store: FeatureStore) -> None:
    """A transaction changed each of 40 rows three times, and all three changes were appended in one commit
    (the processor keeps only the last, stores/ordering.py; another writer may not): three history rows per
    entity tie on Feast's ordering (event time, ingestion time). The training set has the last change."""
    sink = HistorySink(sqlite_store, "w")
    changes = [
        row(cid, 1000 + 3 * cid + step, segment, T0, minor=0)
        for cid in range(40)
        for step, segment in enumerate(["first", "second", "last"])
    ]
    # In version order: Feast's join alone then kept the first (its pick among the tie).
    sink.add(changes)
    sink.flush()
    labels = pd.DataFrame({"customer_id": range(40), "event_timestamp": T0 + timedelta(minutes=1)})
    training = sqlite_store.get_historical_features(labels, [f"{VIEW}:segment"]).to_df()
    assert len(training) == 40
    assert training["segment"].eq("last").all(), training["segment"].value_counts().to_dict()
