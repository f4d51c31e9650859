"""Appending a view's history to a Delta table, each stream position at most once across processors.

Why Delta: an append is one atomic commit to the table's log, so readers (Feast's point-in-time join,
the jobs) see a batch whole or not at all, from any host that mounts the table; and a commit can carry
*application transaction identifiers* (Delta's ``txn`` action: an app id and a version, kept in the
table's state). The sink records, per (topic, partition), the highest Kafka offset whose rows the commit
adds. A batch re-delivered to another processor (the first was killed after its commit, before Kafka
held its offsets) finds its offsets at or below that mark and writes nothing: history gets every
streamed change once, with no compaction needed. Two processors committing the same app id at once
(one stalled past its session, one that took its partitions over) conflict in the log: the loser reloads,
finds the winner's mark and writes only what is above it.

The app id names the topic's *incarnation* (``topic[partition]@<Kafka topic id>``): offsets restart at 0
when a topic is deleted and created again (a wiped Kafka, a re-created connector), and the marks of the
old topic must not make the new one's changes look written. Rows without a stream position (a replay of
dead letters, which re-reads old offsets on purpose; a backfill) are appended without a mark.

Layout: the table is partitioned by ``event_date`` (the UTC day of ``event_timestamp``), so compaction
rewrites one day without touching the others (jobs/compact.py) and Spark or Trino prune by day.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pyarrow as pa

from core.errors import ConfigError, TransientError

if TYPE_CHECKING:
    from deltalake import DeltaTable

logger = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5
PARTITION = "event_date"
# One commit per processor flush: at a flush a second that is ~86,000 log entries a day per view. Delta
# removes log entries older than this at each checkpoint (every 100 commits); time travel further back is
# not needed (vacuum keeps replaced data files an hour).
TABLE_CONFIG = {"delta.logRetentionDuration": "interval 2 days", "delta.checkpointInterval": "100"}
# Topic -> the id of its current incarnation (processor: Kafka's topic id).
Incarnation = Callable[[str], str]


def app_id(topic: str, partition: int, incarnation: str) -> str:
    return f"{topic}[{partition}]@{incarnation}"


def table_schema(history: pa.Schema) -> pa.Schema:
    """A Delta history's schema: the view's history schema plus the ``event_date`` partition column."""
    return history.append(pa.field(PARTITION, pa.date32()))


def with_partition(table: pa.Table) -> pa.Table:
    """``table`` with its ``event_date`` column, the UTC day of each row's event time."""
    import pyarrow.compute as pc

    days = pc.cast(pc.cast(table.column("event_timestamp"), pa.timestamp("us")), pa.date32())
    return table.append_column(PARTITION, days)


def create(path: Path, history: pa.Schema) -> None:
    """Create an empty history table at ``path`` (nothing if one exists; another host may race us)."""
    from deltalake import DeltaTable

    path.mkdir(parents=True, exist_ok=True)
    try:
        DeltaTable.create(
            str(path),
            schema=table_schema(history),
            mode="ignore",
            partition_by=[PARTITION],
            configuration=TABLE_CONFIG,
        )
    except Exception:  # another writer created it between our check and our commit: fine if it is there
        if not (path / "_delta_log").is_dir():
            raise


class DeltaHistory:
    """One view's Delta table; ``append`` is the only write (see the module docstring)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self._table: DeltaTable | None = None  # loaded on first use, then updated incrementally

    def _load(self) -> DeltaTable | None:
        from deltalake import DeltaTable

        if self._table is None:
            if not (self.path / "_delta_log").is_dir():
                return None
            self._table = DeltaTable(str(self.path))
        else:
            self._table.update_incremental()
        return self._table

    def _try_append(
        self, table: pa.Table, apps: list[str | None], positions: Sequence[tuple[str, int, int] | None]
    ) -> list[bool]:
        from deltalake import CommitProperties, Transaction, write_deltalake

        current = self._load()
        if current is None:
            create(self.path, self.schema)
            current = self._load()
            assert current is not None
        marks = {a: current.transaction_version(a) for a in {a for a in apps if a is not None}}
        # A table created elsewhere without the day partition is appended to as it is.
        partitioned = PARTITION in current.metadata().partition_columns
        keep = [_above(marks, a, p) for a, p in zip(apps, positions, strict=True)]
        rows = table.filter(pa.array(keep, pa.bool_())) if not all(keep) else table
        if not partitioned:
            rows = rows.drop_columns([PARTITION])
        if rows.num_rows == 0:
            return keep
        highest: dict[str, int] = {}
        for a, p, k in zip(apps, positions, keep, strict=True):
            if a is not None and p is not None and k:
                highest[a] = max(highest.get(a, -1), p[2])
        write_deltalake(
            current,
            rows,
            mode="append",
            partition_by=[PARTITION] if partitioned else None,
            # A feature added to the view adds a column; rows written before read it as null.
            schema_mode="merge",
            commit_properties=CommitProperties(
                app_transactions=[Transaction(a, v) for a, v in sorted(highest.items())]
            ),
        )
        durable(self.path, current.version())
        return keep

    def append(
        self,
        table: pa.Table,
        positions: Sequence[tuple[str, int, int] | None],
        incarnation: Incarnation | None,
    ) -> list[bool]:
        """Append ``table``'s rows; returns which of them were written (False: already in the table).

        ``positions`` gives each row's (topic, partition, offset); with ``incarnation`` the commit records
        the highest offset per partition, and rows at or below a recorded mark are not written again.
        """
        from deltalake.exceptions import (
            CommitFailedError,
            DeltaError,
            DeltaProtocolError,
            SchemaMismatchError,
        )

        apps: list[str | None] = [
            app_id(p[0], p[1], incarnation(p[0])) if p is not None and incarnation is not None else None
            for p in positions
        ]
        table = with_partition(table)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                kept = self._try_append(table, apps, positions)
            except CommitFailedError as exc:
                # Another writer committed the same partition's rows meanwhile: reload, re-check marks.
                logger.info(
                    "%s: concurrent commit (%s); re-reading the table (attempt %d)", self.path, exc, attempt
                )
                self._table = None
                time.sleep(0.05 * attempt)
                continue
            except SchemaMismatchError as exc:
                raise ConfigError(
                    f"history table {self.path} cannot take view rows of this shape: {exc}",
                    "a feature's type changed: declare it under a new name, or move the old table aside",
                ) from None
            except DeltaProtocolError as exc:
                raise ConfigError(
                    f"history table {self.path} needs a Delta feature this writer lacks: {exc}",
                    "upgrade deltalake, or recreate the table with featurectl",
                ) from None
            except (DeltaError, OSError) as exc:  # storage unreachable, a directory gone: not the rows' fault
                self._table = None
                raise TransientError(
                    f"history table {self.path} cannot be written: {' '.join(str(exc).split())[:300]}",
                    "the batch is retried; check the path exists, is a directory and is writable",
                ) from None
            return kept
        raise TransientError(
            f"history table {self.path}: {COMMIT_ATTEMPTS} commits in a row lost to concurrent writers",
            "the batch is retried; if it persists, check for a job rewriting the table in a loop",
        )


def durable(path: Path, version: int) -> None:
    """fsync what commit ``version`` of the table at ``path`` wrote (its data files, its log entry and
    their directories) before the offsets that produced it are committed: delta-rs writes local files
    without fsync, so after a power loss (not a process crash) the commit could be gone."""
    log = path / "_delta_log" / f"{version:020d}.json"
    targets: list[Path] = []
    with open(log, "rb") as fh:
        for line in fh:
            action = json.loads(line)
            if "add" in action:
                targets.append(path / unquote(action["add"]["path"]))
    for target in [*targets, log]:
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in {t.parent for t in targets} | {log.parent}:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _above(marks: dict[str, int | None], app: str | None, position: tuple[str, int, int] | None) -> bool:
    """Whether a row is not in the table yet: no mark applies to it, or its offset is above the mark."""
    if app is None or position is None:
        return True
    mark = marks.get(app)
    return mark is None or position[2] > mark
