from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from core.errors import FencedError
from stores.feast_layout import FeastLayoutSink
from stores.history.sink import HistorySink
from stores.registry import open_online_sink
from stores.sink import DELETE, UPSERT, SinkRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(cid: int, version: int, segment: str | None = "gold", op: str = UPSERT) -> SinkRow:
    features = (
        {}
        if op == DELETE
        else {"country": "GB", "segment": segment, "credit_limit": float(version), "birth_date": None}
    )
    return SinkRow(
        "customer_profile",
        op,
        {"customer_id": cid},
        features,
        T0 + timedelta(seconds=version),
        version,
        "d" if op == DELETE else "u",
        f"t[0] offset={version}",
    )


def online(store: FeatureStore, *ids: int) -> dict:
    return store.get_online_features(
        features=["customer_profile:segment", "customer_profile:credit_limit"],
        entity_rows=[{"customer_id": i} for i in ids],
    ).to_dict()


@pytest.fixture
def sink(fresh_store: FeatureStore):  # type: ignore[no-untyped-def]
    s = open_online_sink(fresh_store)
    yield s
    s.close()


def test_upsert_is_readable_through_feast(fresh_store: FeatureStore, sink: FeastLayoutSink) -> None:
    sink.add([row(1, 10, "silver"), row(2, 11, "gold")])
    assert len(sink.flush()) == 2
    assert online(fresh_store, 1, 2, 3) == {
        "customer_id": [1, 2, 3],
        "segment": ["silver", "gold", None],
        "credit_limit": [10.0, 11.0, None],
    }


def test_an_older_change_never_overwrites_a_newer_one(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    sink.add([row(1, 20, "gold")])
    sink.flush()
    sink.add([row(1, 15, "stale")])
    assert sink.flush() == []
    assert online(fresh_store, 1)["segment"] == ["gold"]
    assert sink.skipped_older == 1  # counted (and logged), never silent


def test_same_change_twice_is_idempotent(fresh_store: FeatureStore, sink: FeastLayoutSink) -> None:
    for _ in range(2):
        sink.add([row(1, 20, "gold")])
        sink.flush()
    assert online(fresh_store, 1)["segment"] == ["gold"]


def test_within_a_batch_the_latest_change_wins(fresh_store: FeatureStore, sink: FeastLayoutSink) -> None:
    sink.add([row(1, 3, "c"), row(1, 5, "e"), row(1, 4, "d")])
    sink.flush()
    assert online(fresh_store, 1)["segment"] == ["e"]


def test_delete_removes_the_entity_and_its_tombstone_blocks_older_replays(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    sink.add([row(1, 1, "gold"), row(2, 1, "gold")])
    sink.flush()
    sink.add([row(1, 2, op=DELETE)])
    sink.flush()
    assert online(fresh_store, 1, 2)["segment"] == [None, "gold"]
    sink.add([row(1, 1, "gold")])  # the create, re-delivered after the delete
    sink.flush()
    assert online(fresh_store, 1)["segment"] == [None]
    assert sink.live_keys("customer_profile") == [{"customer_id": 2}]
    sink.add([row(1, 3, "back")])  # a new insert with the same key after the delete
    sink.flush()
    assert online(fresh_store, 1)["segment"] == ["back"]


def test_offline_sink_appends_a_file_per_flush_with_history_columns(parquet_dir_store: FeatureStore) -> None:
    """A Parquet-directory history (tests/unit/test_delta_history.py has the Delta table's)."""
    sink = HistorySink(parquet_dir_store, writer_id="w")
    sink.add([row(1, 1, "silver")])
    sink.flush()
    sink.add([row(1, 2, "gold"), row(1, 3, op=DELETE)])
    sink.flush()
    directory = sink.directory(parquet_dir_store.get_feature_view("customer_profile"))
    files = sorted(p.name for p in Path(directory).glob("*.parquet"))
    assert len(files) == 2 and not list(Path(directory).glob(".*"))
    table = ds.dataset(str(directory)).to_table().to_pylist()
    assert [
        (r["segment"], r["cdc_deleted"], r["cdc_version"])
        for r in sorted(table, key=lambda r: r["cdc_version"])
    ] == [("silver", False, 1), ("gold", False, 2), (None, True, 3)]
    assert all(r["event_timestamp"].tzinfo is not None for r in table)


def test_the_version_check_and_the_write_are_atomic_against_another_writer(fresh_store: FeatureStore) -> None:
    """A second writer (materialize, replay) flushing between A's version read and A's write must wait."""
    import threading

    a, b = open_online_sink(fresh_store), open_online_sink(fresh_store)
    b_done = threading.Event()
    read_versions = a._current_versions  # type: ignore[attr-defined]

    def interleaved(*args, **kwargs):  # type: ignore[no-untyped-def]
        versions = read_versions(*args, **kwargs)  # A has checked: nothing stored yet
        b.add([row(1, 20, "newer")])
        threading.Thread(target=lambda: (b.flush(), b_done.set()), daemon=True).start()
        b_done.wait(1.0)  # without the write lock, B writes version 20 now
        return versions

    a._current_versions = interleaved  # type: ignore[attr-defined]
    a.add([row(1, 10, "older")])
    a.flush()
    assert b_done.wait(30)
    assert online(fresh_store, 1)["segment"] == ["newer"]
    a.close()
    b.close()


def test_a_truncate_is_a_barrier_for_older_rows_from_any_partition(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    sink.add([row(1, 10, "gold")])
    sink.flush()
    # TRUNCATE at version 20: the live entity is deleted, and the table's older changes are refused.
    sink.add_barrier("customer_profile", (20, 0))
    sink.add([row(1, 20, op=DELETE)])
    sink.flush()
    # An older change of another entity, still queued on another partition, arrives after it.
    sink.add([row(2, 15, "from before the truncate")])
    assert sink.flush() == []
    sink.add([row(3, 25, "after")])
    sink.flush()
    assert online(fresh_store, 1, 2, 3)["segment"] == [None, None, "after"]
    # A second sink (restart, another writer) sees the same barrier: it lives in the store.
    again = open_online_sink(fresh_store)
    again.add([row(2, 19, "still from before")])
    assert again.flush() == []
    again.close()


def test_a_source_whose_positions_went_backwards_is_detected_not_skipped(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    from core.errors import SourceChangedError

    sink.add([row(1, 5000, "gold")])  # committed at T0 + 5000 s
    sink.flush()
    # Re-delivered, replayed or materialised: older version and older commit time -> skipped.
    sink.add([row(1, 10, "older")])
    assert sink.flush() == []
    # A new cluster: positions start low again, but the change is committed later than the stored one.
    later = SinkRow(
        "customer_profile",
        UPSERT,
        {"customer_id": 1},
        {"segment": "new cluster"},
        T0 + timedelta(hours=3),
        10,
        "u",
        "t[0] offset=99",
    )
    sink.add([later])
    with pytest.raises(SourceChangedError) as err:
        sink.flush()
    assert "went backwards" in str(err.value) and "featurectl online reset --yes" in str(err.value)
    sink.discard()
    assert online(fresh_store, 1)["segment"] == ["gold"]  # nothing half-applied
    # The documented recovery: reset, then the new source's changes apply.
    assert sink.reset() == 1
    sink.add([later])
    assert len(sink.flush()) == 1
    assert online(fresh_store, 1)["segment"] == ["new cluster"]


def test_a_failed_registry_read_falls_back_to_the_last_good_view(
    fresh_store: FeatureStore, sink: FeastLayoutSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.protobuf.message import DecodeError

    sink.add([row(1, 10, "gold")])
    sink.flush()

    def truncated(name: str) -> None:
        raise DecodeError("Error parsing message")  # registry.db read while Feast rewrites it

    monkeypatch.setattr(fresh_store, "get_feature_view", truncated)
    sink.add([row(1, 11, "silver")])
    assert len(sink.flush()) == 1
    monkeypatch.undo()
    assert online(fresh_store, 1)["segment"] == ["silver"]


def test_a_writer_whose_partition_was_claimed_since_cannot_write(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    """Copy A claimed t[0] and read a batch; copy B claimed it since (A stalled): A's flush is refused."""
    stale = open_online_sink(fresh_store)
    stale.hold(stale.claim([("t", 0), ("t", 1)], "copy A"))
    assert sink.claim([("t", 0)], "copy B") == {("t", 0): 2}
    sink.hold({("t", 0): 2})
    stale.add([row(1, 10, "from the stale copy"), row(2, 11, "on a partition A still owns")])
    with pytest.raises(FencedError, match=r"t\[0\] \(epoch 2 > ours 1, copy B"):
        stale.flush()
    stale.discard()
    assert online(fresh_store, 1, 2)["segment"] == [None, None]  # nothing of the batch: all or nothing
    with pytest.raises(FencedError):  # a batch with nothing for the online store is refused too
        stale.flush()
    sink.add([row(1, 10, "owner")])
    sink.flush()
    # Writers that own no partitions (replay, materialize) hold no epochs: ordered by versions only.
    replay = open_online_sink(fresh_store)
    replay.add([row(2, 5, "replayed")])
    replay.flush()
    assert online(fresh_store, 1, 2)["segment"] == ["owner", "replayed"]
    for s in (stale, replay):
        s.close()


def test_incremental_materialize_reads_a_file_that_landed_after_a_later_stamped_one(
    parquet_dir_store: FeatureStore, tmp_path: Path
) -> None:
    """A slow writer renames its file into place after another writer's file stamped later, and after a
    materialize run: the next incremental run still reads it (a time watermark skipped it for good). Parquet directories only: a Delta table gets files by commits."""
    from jobs.materialize import Materializer

    slow, fast = HistorySink(parquet_dir_store, "slow"), HistorySink(parquet_dir_store, "fast")
    slow.add([row(1, 10, "from the slow writer")])
    stamped_early = slow._table(
        parquet_dir_store.get_feature_view("customer_profile"), slow._pending["customer_profile"], T0
    )
    slow.discard()
    fast.add([row(2, 20, "fast")])
    fast.flush()
    jobs = Materializer(parquet_dir_store, tmp_path / "jobs")
    assert jobs.run(parquet_dir_store.get_feature_view("customer_profile"), incremental=True).entities == 1
    directory = fast.directory(parquet_dir_store.get_feature_view("customer_profile"))
    pq.write_table(stamped_early, directory / "part-19700101T000000000000-slow-000001.parquet")
    again = jobs.run(parquet_dir_store.get_feature_view("customer_profile"), incremental=True)
    assert (again.files, again.entities) == (1, 1)
    assert online(parquet_dir_store, 1, 2)["segment"] == ["from the slow writer", "fast"]
    assert jobs.run(parquet_dir_store.get_feature_view("customer_profile"), incremental=True).files == 0


def test_compaction_removes_duplicates_and_superseded_rows_and_keeps_the_training_set(
    fresh_store: FeatureStore,
) -> None:
    """Three copies of one change (re-deliveries), a transaction whose first change was re-delivered
    after its second, backfill rows (version 0) at two times: compaction keeps one row per change and
    the transaction's last, so the training set is the same, deterministic, from one file."""
    import pandas as pd

    from jobs.compact import compact

    view = fresh_store.get_feature_view("customer_profile")
    txn_time = T0 + timedelta(seconds=20)

    def txn(minor: int, segment: str) -> SinkRow:
        features = {"country": "GB", "segment": segment, "credit_limit": 1.0, "birth_date": None}
        return SinkRow(
            "customer_profile", UPSERT, {"customer_id": 1}, features, txn_time, 20, "u", "t[0]", None, minor
        )

    for batch in (
        [row(1, 10, "first")],
        [row(1, 10, "first"), txn(1, "mid"), txn(2, "final")],
        [row(1, 10, "first"), txn(1, "mid")],  # re-delivered after the transaction's last change
        [row(2, 0, "backfilled then")],
        [
            SinkRow(
                "customer_profile",
                UPSERT,
                {"customer_id": 2},
                row(2, 0, "backfilled now").features,
                T0 + timedelta(seconds=30),
                0,
                "b",
                "backfill",
            )
        ],
    ):
        sink = HistorySink(fresh_store)  # each batch by another processor: re-deliveries after crashes
        sink.add(batch)
        sink.flush()
    entity_df = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 2],
            "event_timestamp": [T0 + timedelta(seconds=s) for s in (5, 15, 25, 5, 15, 35)],
        }
    )

    def training() -> dict[tuple[int, int], Any]:
        df = fresh_store.get_historical_features(entity_df, ["customer_profile:segment"]).to_df()
        return {
            (r.customer_id, int((r.event_timestamp - T0).total_seconds())): r.segment for r in df.itertuples()
        }

    before = training()
    report = compact(fresh_store, view)
    assert (report.files_before, report.files_after) == (5, 1)
    assert (report.rows_before, report.rows_after, report.duplicates, report.superseded) == (8, 4, 3, 1)
    after = training()
    assert after[(1, 25)] == "final"  # before compaction: "mid" or "final", whichever Feast's sort put last
    assert {k: v for k, v in before.items() if k != (1, 25)} == {
        k: v for k, v in after.items() if k != (1, 25)
    }
    assert after[(1, 15)] == "first" and after[(2, 35)] == "backfilled now"
    assert compact(fresh_store, view).files_after == 1  # nothing left to do
