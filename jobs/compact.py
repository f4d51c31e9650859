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
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView

from jobs.history import first_of_groups, history_files
from streams.sinks.offline_parquet import ParquetOfflineSink, history_schema

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


def compact(
    store: FeatureStore, view: FeatureView, rows_per_file: int = 2_000_000, keep_s: float = KEEP_S
) -> CompactReport:
    """Compact ``view``'s history directory; see the module docstring."""
    report = CompactReport(view.name)
    directory = ParquetOfflineSink(store).directory(view)
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
