"""``featurectl compact``: a view's history rewritten into few large files, without duplicates.

The processor appends one file per view per batch, and a re-delivered batch appends its rows again,
so history grows in files and in duplicates. Compaction reads the files present when it starts
(files landing meanwhile are left for the next run), and writes their rows back:

- once per change: rows with the same entity, event time and version are one change written more
  than once (a re-delivery, a retried batch, a replay); the first written is kept. (Event time is
  part of the identity: backfill rows all have version 0 and differ by time);
- once per entity and instant: of rows with the same entity and event time (changes of one
  transaction, which share its commit time), only the highest version is kept. A transaction's
  intermediate states were never visible in Postgres, and Feast's point-in-time join picks
  arbitrarily among rows with equal event times (its sort is not stable);
- sorted by entity and event time, in files of at most ``rows_per_file`` rows with row groups of
  ``ROW_GROUP`` rows, so a reader filtering a range of keys (the backfill, per chunk) skips the row
  groups whose key statistics exclude them instead of reading the whole history.

Readers never see a half state: outputs are written to dot-files (ignored by readers) and fsynced,
then renamed into place, and only then are the inputs moved to ``_compacted/<run>/<name>.replaced``
(Feast's file offline store reads every ``*.parquet`` under the directory, subdirectories and dot-files
included, so a moved file must lose that suffix; the directory is emptied by a later run after
``KEEP_S``). A reader that listed the directory just before the move fails to open a moved file and
must retry; our own readers (materialize, backfill) are locked out for the move by the CLI. A run killed at any point leaves a directory whose
readable files hold every change at least once; the next run finishes the job. One run per view at a
time (jobs/lock.py, taken by the CLI).

A Delta history (stores/history/reader.py) is compacted one ``event_date`` partition (UTC day of event time) at a
time, and only the days held in more files than their bytes need (``target_bytes`` per file): the cost of a run follows what
landed since the last one, not the size of the history. A day's rows, from the files of the snapshot
read, are deduplicated as above and written back sorted by entity and time in one commit that replaces
exactly that day's files (an overwrite with a partition predicate): readers see the day before or after,
never half. A processor appending rows of the same day meanwhile makes the commit fail (Delta's conflict
check; appends to other days do not): the day is retried, and left for the next run if it keeps losing.
Then files no longer in the table for ``keep_s`` are vacuumed, and the log is checkpointed.

The run also removes from the online store the values of the views with a ttl that are past it
(``expire_online``): reads serve them as expired already (stores/ttl.py), so this only frees the space.
Each removal is a delete at the entity's stored version (its tombstone stays): a change the processor
writes meanwhile wins, and ``verify`` counts such an entity as expired, not missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView

from aggregations.spec import is_aggregation_view
from core.errors import ConfigError
from stores.history.delta import PARTITION, with_partition
from stores.history.reader import History, first_of_groups, history_files, is_delta
from stores.history.schema import history_schema
from stores.history.sink import HistorySink

logger = logging.getLogger(__name__)

ROW_GROUP = 64_000
KEEP_S = 3600.0  # how long replaced files stay in _compacted/ for readers that listed them before
TRASH = "_compacted"


@dataclass
class CompactReport:
    view: str
    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    duplicates: int = 0  # one change written more than once
    superseded: int = 0  # earlier changes of a transaction (same entity, same event time)
    days: int = 0  # Delta: days of event time rewritten
    days_deferred: int = 0  # Delta: days left for the next run (a writer kept appending to them)
    vacuumed: int = 0  # Delta: files removed from disk


def compact(
    store: FeatureStore, view: FeatureView, rows_per_file: int = 2_000_000, keep_s: float = KEEP_S
) -> CompactReport:
    """Compact ``view``'s history; see the module docstring."""
    if is_delta(view):
        return compact_delta(store, view, keep_s=keep_s)
    report = CompactReport(view.name)
    directory = HistorySink(store).directory(view)
    _empty_trash(directory / TRASH, keep_s)
    names = sorted(history_files(directory)) if directory.exists() else []
    report.files_before = len(names)
    if len(names) < 2:
        report.files_after = len(names)
        return report
    schema = history_schema(view)
    table = ds.dataset([str(directory / n) for n in names], format="parquet", schema=schema).to_table()
    report.rows_before = table.num_rows
    keys = [c.name for c in view.entity_columns]
    table = _dedup(table, keys, report)
    outputs = _write(directory, table, schema, rows_per_file)
    trash = directory / TRASH / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    trash.mkdir(parents=True)
    for name in names:  # after the outputs are in place: every change stays readable throughout
        os.replace(directory / name, trash / f"{name}.replaced")
    report.rows_after = table.num_rows
    report.files_after = len(history_files(directory))
    logger.info(
        "compacted %s: %d files -> %d (%d written), %d rows -> %d (%d duplicates, %d superseded in a transaction)",
        view.name,
        report.files_before,
        report.files_after,
        len(outputs),
        report.rows_before,
        report.rows_after,
        report.duplicates,
        report.superseded,
    )
    return report


def _dedup(table: pa.Table, keys: list[str], report: CompactReport) -> pa.Table:
    """One row per (entity, event time, version), then per (entity, event time) the highest version."""
    table = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    change = [*keys, "event_timestamp", "cdc_version", "cdc_version_minor"]
    # Written first wins among copies of one change: sort by it, keep the first of each group.
    ordered = table.sort_by(
        [(k, "ascending") for k in change] + [("ingested_at", "ascending"), ("_row", "ascending")]
    )
    first = first_of_groups(ordered, change)
    report.duplicates = ordered.num_rows - first.num_rows
    # Per entity and event time, the highest version: sort it last, keep the last of each group.
    ordered = first.sort_by([(k, "ascending") for k in change])
    last = first_of_groups(ordered, [*keys, "event_timestamp"], last=True)
    report.superseded = ordered.num_rows - last.num_rows
    return last.drop_columns(["_row"])


def _write(directory: Path, table: pa.Table, schema: pa.Schema, rows_per_file: int) -> list[str]:
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    names: list[str] = []
    table = table.select(schema.names).cast(schema)
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        name = f"compacted-{stamp}-{i:04d}.parquet"
        tmp = directory / f".{name}.tmp"
        pq.write_table(table.slice(start, rows_per_file), tmp, row_group_size=ROW_GROUP)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        names.append(name)
    for name in names:
        os.replace(directory / f".{name}.tmp", directory / name)
    return names


def _empty_trash(trash: Path, keep_s: float) -> None:
    if not trash.exists():
        return
    for run in trash.iterdir():
        if time.time() - run.stat().st_mtime > keep_s:
            shutil.rmtree(run, ignore_errors=True)


DAY_ATTEMPTS = 3
TARGET_BYTES = 256 * 1024 * 1024


def compact_delta(
    store: FeatureStore, view: FeatureView, target_bytes: int = TARGET_BYTES, keep_s: float = KEEP_S
) -> CompactReport:
    """Compact a Delta history day by day, then vacuum; see the module docstring."""
    from deltalake import DeltaTable, WriterProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    report = CompactReport(view.name)
    history = History(store, view)
    if not history.exists():
        return report
    table = DeltaTable(str(history.path))
    if PARTITION not in table.metadata().partition_columns:
        raise ConfigError(
            f"history table {history.path} is not partitioned by {PARTITION}, so it cannot be compacted by day",
            "let featurectl create the table (feast-apply or the processor's first write) and backfill it",
        )
    report.files_before = len(table.file_uris())
    keys = [c.name for c in view.entity_columns]
    for day in _crowded_days(table, target_bytes):
        for attempt in range(1, DAY_ATTEMPTS + 1):
            table.update_incremental()
            files = table.file_uris(file_pruning_predicate=[(PARTITION, "=", day)])
            rows = ds.dataset(files, format="parquet", schema=history.schema).to_table()
            day_report = CompactReport(view.name)
            deduped = _dedup(rows, keys, day_report)
            deduped = with_partition(deduped.sort_by([(k, "ascending") for k in [*keys, "event_timestamp"]]))
            try:
                write_deltalake(
                    table,
                    deduped,
                    mode="overwrite",
                    partition_by=[PARTITION],
                    predicate=f"{PARTITION} = '{day}'",  # this day's files only; the others stay
                    schema_mode="merge",
                    target_file_size=target_bytes,
                    writer_properties=WriterProperties(max_row_group_size=ROW_GROUP, compression="ZSTD"),
                )
            except CommitFailedError as exc:
                logger.info("%s %s: a writer appended to this day meanwhile (%s)", view.name, day, exc)
                if attempt == DAY_ATTEMPTS:
                    report.days_deferred += 1
                    logger.warning("%s %s: still receiving rows; left for the next run", view.name, day)
                continue
            report.days += 1
            report.rows_before += rows.num_rows
            report.rows_after += deduped.num_rows
            report.duplicates += day_report.duplicates
            report.superseded += day_report.superseded
            break
    table.update_incremental()
    # Unreferenced files older than keep_s: a reader that loaded the table before them has finished.
    report.vacuumed = len(
        table.vacuum(retention_hours=int(keep_s // 3600), dry_run=False, enforce_retention_duration=False)
    )
    table.create_checkpoint()
    table.cleanup_metadata()
    report.files_after = len(table.file_uris())
    logger.info(
        "compacted %s: %d days rewritten (%d left for later), %d files -> %d, %d rows -> %d "
        "(%d duplicates, %d superseded in a transaction), %d unreferenced files vacuumed",
        view.name,
        report.days,
        report.days_deferred,
        report.files_before,
        report.files_after,
        report.rows_before,
        report.rows_after,
        report.duplicates,
        report.superseded,
        report.vacuumed,
    )
    return report


def _crowded_days(table: Any, target_bytes: int) -> list[str]:
    """Days (``event_date`` partitions) held in more files than their bytes need."""
    actions = pa.table(table.get_add_actions(flatten=True))
    files: dict[str, int] = {}
    size: dict[str, int] = {}
    for day, n in zip(
        actions.column(f"partition.{PARTITION}").to_pylist(),
        actions.column("size_bytes").to_pylist(),
        strict=True,
    ):
        key = str(day)
        files[key] = files.get(key, 0) + 1
        size[key] = size.get(key, 0) + int(n)
    return sorted(d for d, n in files.items() if n > max(1, -(-size[d] // target_bytes)))


def expire_online(store: FeatureStore, views: Sequence[FeatureView], echo: Callable[[str], None]) -> int:
    """Remove from the online store the values of ``views`` past their view's ttl (reads already serve them as
    expired: stores/ttl.py); reports and returns how many entities went. Views without a ttl are untouched."""
    from stores import ttl
    from stores.registry import open_online_sink

    timed = [v for v in views if ttl.ttl_ns(v) and not is_aggregation_view(v)]
    if not timed:
        return 0
    sink = open_online_sink(store)
    removed = 0
    try:
        for view in timed:
            count = sink.expire(view, ttl.clock())
            removed += count
            echo(f"compact {view.name}: {count} online value(s) past the view's ttl ({view.ttl}) removed")
    finally:
        sink.close()
    return removed


def compact_views(
    store: FeatureStore, locks: Path, views: Sequence[str], rows_per_file: int, echo: Callable[[str], None]
) -> None:
    """Compact ``views`` (default: all), each under the locks of the jobs that read its history."""
    from jobs.lock import job_lock

    selected = [store.get_feature_view(v) for v in views] or store.list_feature_views()
    expire_online(store, selected, echo)
    for view in selected:
        if is_aggregation_view(view):
            # One row per source row and instant, not per entity: compact's identity does not fit it yet.
            echo(f"compact {view.name}: skipped (an aggregation view's history is not compacted yet)")
            continue
        # Our own readers of the history must not have its files moved under them.
        with job_lock(locks, "materialize"), job_lock(locks, f"backfill-{view.name}"):
            report = compact(store, view, rows_per_file)
        days = (
            f"{report.days} day(s) rewritten, {report.days_deferred} left for the next run "
            f"(still receiving rows), {report.vacuumed} replaced file(s) vacuumed; "
            if is_delta(view)
            else ""
        )
        echo(
            f"compact {view.name}: {days}{report.files_before} files -> {report.files_after}, "
            f"{report.rows_before} rows -> {report.rows_after} "
            f"({report.duplicates} duplicates, {report.superseded} superseded within a transaction)"
        )
