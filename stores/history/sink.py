"""The offline history as a sink (HistorySink): each flush appends to each view's Delta table (the
default) or Parquet directory.

One file per feature view per flush, where the view's batch source points, so the cost of a write does
not depend on the size of the history (Feast's own push to a file source rewrites the whole file). The
FileSource's format decides the layout: a directory of Parquet files (the default), or a Delta table
(``file_format=DeltaFormat()``: atomic commits, stream positions written once across processors, for a
history many hosts append to: stores/history/delta.py). Deletes are kept as history rows with
null features, so a point-in-time query after a delete finds no value. Of one transaction's changes to
an entity (same event time) only the last reaches the sink (the pipeline: stores/ordering.py
``last_of_each_instant``).

Duplicates (a Parquet directory; a Delta table gets none from re-delivery). A row's identity is (view,
entity, source offset, version). Within one process the sink never writes a row twice: a batch retried
before its offsets were committed (a dead-letter topic or another sink failing after this one wrote, a
poison record isolated in halves) finds its rows already written and adds nothing; ``committed`` forgets
them once Kafka holds the offsets. A batch re-delivered to *another* process (this one was killed after
writing, before committing) is written again: the copy has the same identity, values, event time and
version, so no point-in-time join, ``materialize`` or ``backfill`` answer changes (each picks one row
per entity and instant), and ``featurectl compact`` removes it (jobs/compact.py dedups on the identity).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView

from aggregations.rows import ROW, history_text
from stores.history.delta import DeltaHistory, Incarnation
from stores.history.reader import history_path, is_delta
from stores.history.schema import META_COLUMNS, history_schema
from stores.ordering import entity_ident
from stores.sink import Sink, SinkRow
from stores.views import RegistryViews

logger = logging.getLogger(__name__)


class HistorySink(Sink):
    """Appends feature history to each view's FileSource: a Parquet directory or a Delta table.

    ``incarnation`` (the live processor's: topic -> Kafka topic id) turns on Delta's once-per-position
    appends; writers that re-read old positions on purpose (replay) and jobs leave it None.
    """

    def __init__(
        self, store: FeatureStore, writer_id: str | None = None, incarnation: Incarnation | None = None
    ) -> None:
        self.store = store
        self.incarnation = incarnation
        self._delta: dict[str, DeltaHistory] = {}
        self._registry = RegistryViews(store)
        self.repo_path = Path(store.config.repo_path or ".")
        # Distinguishes files of processor instances writing the same view at the same moment.
        self.writer_id = writer_id or uuid.uuid4().hex[:8]
        self._pending: dict[str, list[SinkRow]] = defaultdict(list)
        self._seq = 0
        # Identities of rows written since the last commit (module docstring: duplicates).
        self._unconfirmed: set[tuple[Any, ...]] = set()

    def directory(self, view: FeatureView) -> Path:
        return history_path(self.store, view)

    def add(self, rows: Sequence[SinkRow]) -> None:
        for row in rows:
            self._pending[row.view].append(row)

    def discard(self) -> None:
        self._pending.clear()

    def forget(self, rows: Sequence[SinkRow]) -> None:
        gone = {id(r) for r in rows}
        for view, pending in self._pending.items():
            self._pending[view] = [r for r in pending if id(r) not in gone]

    def committed(self) -> None:
        self._unconfirmed.clear()

    def flush(self) -> list[SinkRow]:
        written: list[SinkRow] = []
        ingested_at = datetime.now(UTC)
        for view_name, pending in self._pending.items():
            identities = [_identity(r) for r in pending]
            rows = [r for r, i in zip(pending, identities, strict=True) if i not in self._unconfirmed]
            if len(rows) < len(pending):
                logger.info(
                    "%s: %d row(s) of a retried batch already in the history; not written again",
                    view_name,
                    len(pending) - len(rows),
                )
            if not rows:
                continue
            view = self._registry.get(view_name)  # as of the last registry refresh
            table = self._table(view, rows, ingested_at)
            if is_delta(view):
                rows = self._append_delta(view, rows, table)
                self._unconfirmed.update(_identity(r) for r in rows)
                written.extend(rows)
                continue
            directory = self.directory(view)
            directory.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            name = f"part-{ingested_at:%Y%m%dT%H%M%S%f}-{self.writer_id}-{self._seq:06d}.parquet"
            tmp = directory / f".{name}.tmp"
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:  # durable before the offsets that produced it are committed
                os.fsync(fh.fileno())
            os.replace(tmp, directory / name)  # readers never see a half-written file
            self._unconfirmed.update(identities)
            written.extend(rows)
        self._pending.clear()
        return written

    def _append_delta(self, view: FeatureView, rows: list[SinkRow], table: pa.Table) -> list[SinkRow]:
        history = self._delta.get(view.name)
        path = self.directory(view)
        if history is None or history.path != path:
            history = self._delta[view.name] = DeltaHistory(path, history_schema(view))
        kept = history.append(table, [r.position for r in rows], self.incarnation)
        if not all(kept):
            logger.info(
                "%s: %d row(s) of a re-delivered batch already in the history table; not written again",
                view.name,
                kept.count(False),
            )
        return [r for r, k in zip(rows, kept, strict=True) if k]

    def _table(self, view: FeatureView, rows: list[SinkRow], ingested_at: datetime) -> pa.Table:
        schema = history_schema(view)
        columns: dict[str, Any]
        if ROW in schema.names:  # an aggregation view: its contributions (stores/history/schema.py)
            columns = {ROW: [r.keys.get(ROW) for r in rows]}
            for name in schema.names[1:]:
                if name in META_COLUMNS:
                    break
                textual = schema.field(name).type == pa.string()
                columns[name] = [history_text(r.features.get(name)) if textual else r.features.get(name)
                                 for r in rows]  # fmt: skip
        else:
            columns = {c.name: [r.keys.get(c.name) for r in rows] for c in view.entity_columns}
            columns.update({f.name: [r.features.get(f.name) for r in rows] for f in view.features})
        columns.update(
            {
                "event_timestamp": [r.event_time for r in rows],
                "ingested_at": [ingested_at] * len(rows),
                "cdc_op": [r.cdc_op for r in rows],
                "cdc_deleted": [r.op == "delete" for r in rows],
                "cdc_version": [r.version for r in rows],
                "cdc_version_minor": [r.version_minor for r in rows],
                "cdc_source": [r.source for r in rows],
                "cdc_embedding_model": [r.model for r in rows],
            }
        )
        return pa.Table.from_pydict(columns, schema=schema)


def _identity(row: SinkRow) -> tuple[Any, ...]:
    """What makes a history row the same row again: its view, entity, source message and version."""
    return (row.view, entity_ident(row.keys), row.source, row.order, row.op)
