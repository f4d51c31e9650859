"""Historical backfill: a feature view's source table, read from Postgres, into the offline store.

Streams the table in primary-key order, ``chunk`` rows per query (keyset pagination with
SQLAlchemy: memory stays bounded whatever the table size), decodes each row as the stream
processor does, validates it with the view's suite (failures go to the dead-letter topic), embeds
text for embedding views, and appends the rows whose state differs from the latest state the
history holds for that key (one Parquet file per chunk, written atomically).

Encoded as the stream encodes: every value is first put in the JSON encoding Debezium gives it
(``debezium_encoding``, connectors/encoding.py; json, jsonb, uuid and numeric read as Postgres's own text), then decoded by
the stream's decoder, so for one row state a backfilled history row and a streamed one hold the same
bytes (tested over every common Postgres type).

Idempotent: a re-run over an unchanged table writes nothing, because every row equals its latest
history (compared as stored: float32 rounding, NaN equal to NaN). Resumable: after each chunk the last key is checkpointed in ``<data_dir>/jobs/``; a run
after an interruption continues from it (and the comparison makes a repeated chunk harmless).
Backfilled rows carry ``cdc_op = "b"``, version 0, and as event time the row's ``timestamp_column``
if given (e.g. ``updated_at``); else the commit time of the transaction that wrote the row's state
(``pg_xact_commit_timestamp(xmin)``, when the server has ``track_commit_timestamp = on``, as the local
stack does); else the time the chunk's query started. A state's commit time is never later than a change
committed after it, so a backfilled row never shadows a streamed change in a point-in-time join; the
query's start time can only be later than a commit racing it by the microseconds between a commit's
timestamp and its visibility (turn the setting on to close that).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import sqlalchemy as sa
from feast import FeatureStore, FeatureView
from tqdm import tqdm

from aggregations.spec import is_aggregation_view
from connectors.encoding import connect as connect_source
from connectors.encoding import image_of, read_as
from core.errors import ConfigError
from stores.history.reader import History
from stores.history.schema import history_schema
from stores.history.sink import HistorySink
from stores.registry import open_online_sink
from stores.sink import UPSERT, SinkRow
from streams.check import check
from streams.dlq import DeadLetter, DeadLetterSink
from streams.embed import EmbeddingStep
from streams.routes import Route, route_for, routes_for, table_policy
from streams.transform import absent_columns, absent_reason, keyless_reason, row_from_image
from validation.validator import BatchValidator

logger = logging.getLogger(__name__)


@dataclass
class BackfillReport:
    view: str
    table: str
    read: int = 0
    written: int = 0
    unchanged: int = 0
    dead_lettered: int = 0
    resumed_from: Any = None


BACKFILL_TOPIC_PREFIX = "backfill:"  # the "topic" of a backfill dead letter: backfill:<schema.table>


@dataclass(frozen=True)
class SourceRow:
    """A source row in the shape of a Kafka message, for the dead-letter topic."""

    table: str
    key_json: str
    value_json: str
    handled: dict[str, str] = field(default_factory=dict)  # PII columns the value already holds handled

    def topic(self) -> str:
        return f"{BACKFILL_TOPIC_PREFIX}{self.table}"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def key(self) -> bytes:
        return self.key_json.encode()

    def value(self) -> bytes:
        return self.value_json.encode()

    def pii_handled(self) -> dict[str, str]:
        return self.handled


class Checkpoint:
    """The last key written, per view, in a JSON file; gone once a run completes."""

    def __init__(self, jobs_dir: Path, view: str) -> None:
        self.path = jobs_dir / f"backfill-{view}.json"

    def load(self) -> list[Any] | None:
        return json.loads(self.path.read_text())["last_key"] if self.path.exists() else None

    def save(self, last_key: list[Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last_key": last_key, "at": datetime.now(UTC).isoformat()}, default=str))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


COMMITTED = "_featurectl_committed_at"  # extra columns of the chunk query
READ_AT = "_featurectl_read_at"


class PostgresBackfill:
    """One view's table into its offline history. Constructing it connects nothing."""

    def __init__(
        self,
        store: FeatureStore,
        conninfo: str | None,
        view_name: str,
        jobs_dir: Path,
        validator: BatchValidator,
        dead_letters: DeadLetterSink,
        chunk: int = 5000,
        timestamp_column: str | None = None,
    ) -> None:
        self.store = store
        self.view: FeatureView = store.get_feature_view(view_name)
        route = route_for(self.view)
        if route is None and is_aggregation_view(self.view):
            raise ConfigError(
                f"feature view {view_name} is an aggregation view: it is computed from its table's changes, "
                "not backfilled row by row",
                f"re-read its table through the processor: featurectl snapshot {self.view.tags['aggregation.table']}",
            )
        if route is None:
            raise ConfigError(
                f"feature view {view_name} has no cdc.table tag, so it has no source table to backfill from",
                "pick a view fed by CDC (featurectl embeddings status / feature_repo/)",
            )
        self.route: Route = route
        # The table's views decide how dead letters keep PII (the strictest handling); a view refused for
        # embedding PII (streams/routes.py) is refused here too.
        table_routes = routes_for(store.list_feature_views()).get(route.table, [])
        broken = [r.error for r in table_routes if r.view == view_name and r.error]
        if broken:
            raise ConfigError(broken[0])
        self.pii_policy = table_policy(table_routes)

        def connect() -> psycopg.Connection[Any]:
            if conninfo is None:  # built for ``replay``, which reads no table
                raise ConfigError(f"backfill of {view_name}: no source database given", "pass its conninfo")
            return connect_source(conninfo)

        self.engine = sa.create_engine("postgresql+psycopg://", creator=connect)
        self.checkpoint = Checkpoint(jobs_dir, view_name)
        self.validator = validator
        self.dead_letters = dead_letters
        self.chunk = chunk
        self.timestamp_column = timestamp_column
        self.offline = HistorySink(store, writer_id="backfill")
        self.online = open_online_sink(store)  # only to reuse stored vectors of unchanged texts
        self.embedding = EmbeddingStep(self.online)

    def run(self, restart: bool = False) -> BackfillReport:
        schema, _, name = self.route.table.partition(".")
        table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self.engine)
        if self.timestamp_column and self.timestamp_column not in table.c:
            raise ConfigError(
                f"{self.route.table} has no column {self.timestamp_column!r}",
                "name a timestamp column of the table",
            )
        key_cols = [table.c[column] for _, column in self.route.keys]
        report = BackfillReport(self.view.name, self.route.table)
        columns = [read for c in table.c for read in read_as(c)]
        with self.engine.connect() as conn:
            tracked = conn.execute(sa.text("SHOW track_commit_timestamp")).scalar_one() == "on"
        if tracked:
            xmin: sa.ColumnElement[Any] = sa.literal_column("xmin")  # the row version's writing transaction
            columns.append(sa.func.pg_xact_commit_timestamp(xmin).label(COMMITTED))
        else:
            logger.warning(
                "%s: track_commit_timestamp is off, so rows are stamped with their read time, not their "
                "commit time (set it on in postgresql.conf and restart Postgres)",
                self.route.table,
            )
        columns.append(sa.func.statement_timestamp().label(READ_AT))
        last = None if restart else self.checkpoint.load()
        report.resumed_from = last
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            bar = tqdm(
                total=total, unit="rows", desc=f"backfill {self.view.name}", file=sys.stderr, mininterval=2
            )
            if last is not None:
                done = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(sa.tuple_(*key_cols) <= sa.tuple_(*last))
                ).scalar_one()
                bar.update(done)
                logger.info("%s: resuming after key %s (%d rows done)", self.view.name, last, done)
            while True:
                query = sa.select(*columns).order_by(*key_cols).limit(self.chunk)
                if last is not None:
                    query = query.where(sa.tuple_(*key_cols) > sa.tuple_(*last))
                rows = [dict(r._mapping) for r in conn.execute(query)]
                if not rows:
                    break
                self._write_chunk(rows, report)
                last = [rows[-1][c.name] for c in key_cols]
                self.checkpoint.save(last)
                bar.update(len(rows))
            bar.close()
        self.checkpoint.clear()
        self.online.close()
        return report

    def replay(self, letters: Sequence[DeadLetter]) -> BackfillReport:
        """Write this view's backfill dead letters again (``featurectl dlq replay``): each row state as it
        was read, with its event time, validated with the current suite; still invalid ones are
        dead-lettered again with ``attempt`` increased. History only, like the backfill itself."""
        report = BackfillReport(self.view.name, self.route.table)
        by_attempt: dict[int, list[DeadLetter]] = defaultdict(list)
        for letter in letters:
            by_attempt[letter.attempt + 1].append(letter)
        for attempt, batch in sorted(by_attempt.items()):
            images, times, handled = [], [], []
            for letter in batch:
                record = json.loads(letter.value or b"{}")
                if not isinstance(record, dict) or "after" not in record or "event_time" not in record:
                    self.dead_letters.add(
                        letter.message(),
                        "a backfill dead letter without its row's event time (written by an older featurectl): "
                        f"re-run `featurectl backfill {self.view.name} --restart` instead",
                        view=self.view.name,
                        attempt=attempt,
                        kind="backfill",
                        pii_policy=self.pii_policy,
                    )
                    report.dead_lettered += 1
                    continue
                images.append(record["after"])
                handled.append(letter.pii)  # masked in the dead letter already: not handled again
                times.append(datetime.fromisoformat(record["event_time"]))
            report.read += len(images)
            self._write_images(images, times, report, attempt, handled)
        self.online.close()
        return report

    def _write_chunk(self, records: list[dict[str, Any]], report: BackfillReport) -> None:
        report.read += len(records)
        images = [image_of(r, skip=(COMMITTED, READ_AT)) for r in records]
        times = [
            _utc(r[self.timestamp_column] if self.timestamp_column else r.get(COMMITTED) or r[READ_AT])
            for r in records
        ]
        self._write_images(images, times, report)

    def _write_images(
        self,
        images: list[dict[str, Any]],
        times: list[datetime],
        report: BackfillReport,
        attempt: int = 1,
        handled: list[dict[str, str]] | None = None,
    ) -> None:
        """Decode, validate, compare with the latest history, embed and append row states read at ``times``.
        ``handled``: per image, the PII columns it holds handled already (a replayed dead letter's)."""
        done = handled or [{}] * len(images)
        absent = absent_columns(images[0], self.route) if images else []
        if absent:  # the table's columns, not a row's: every row of it lacks them
            raise ConfigError(*absent_reason(self.route.table, absent))
        rows = [row_from_image(image, self.route, handled=h) for image, h in zip(images, done, strict=True)]

        def message_of(i: int) -> SourceRow:
            keys = {c: images[i].get(c) for _, c in self.route.keys}
            # The row state and its event time: what ``replay`` needs to write it as the backfill would have.
            value = {"after": images[i], "event_time": times[i].isoformat()}
            return SourceRow(
                self.route.table, json.dumps(keys, default=str), json.dumps(value, default=str), done[i]
            )

        valid = check(
            self.validator,
            self.dead_letters,
            self.view.name,
            rows,
            self.route.features,
            message_of,
            attempt,
            self.pii_policy,
        )
        report.dead_lettered += len(rows) - len(valid)
        keyless = [i for i in valid if any(rows[i][k] is None for k in self.route.join_keys)]
        for i in keyless:  # as the stream does: a row with no key is a dead letter, never a crash
            missing = [k for k in self.route.join_keys if rows[i][k] is None]
            source_key = {c: images[i].get(c) for _, c in self.route.keys}
            self.dead_letters.add(
                message_of(i), keyless_reason(missing, source_key), view=self.view.name, attempt=attempt,
                kind="join_key", pii_policy=self.pii_policy,
            )  # fmt: skip
        report.dead_lettered += len(keyless)
        valid = [i for i in valid if i not in set(keyless)]
        latest = self._latest([rows[i] for i in valid])
        stored = self._as_stored([rows[i] for i in valid])
        changed: list[SinkRow] = []
        for n, i in enumerate(valid):
            row = rows[i]
            keys = {k: row[k] for k in self.route.join_keys}
            features = {k: v for k, v in row.items() if k not in keys}
            if _same(latest.get(_ident(keys)), stored[n]):
                report.unchanged += 1
                continue
            source = f"backfill {self.route.table}"
            changed.append(SinkRow(self.view.name, UPSERT, keys, features, times[i], 0, "b", source))
        if self.route.embedding is not None and changed:
            changed = self.embedding.apply(self.route.embedding, changed)
        self.offline.add(changed)
        self.offline.flush()
        self.offline.committed()  # no retry of a chunk in this run: keep no identities (memory per row)
        self.dead_letters.flush()
        report.written += len(changed)

    def _as_stored(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows' features as the history would give them back (float32 rounding, µs timestamps)."""
        names = [n for n, _ in self.route.features]
        schema = history_schema(self.view)
        fields = pa.schema([schema.field(n) for n in names])
        table = pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows], schema=fields)
        stored: list[dict[str, Any]] = table.to_pylist()
        return stored

    def _latest(self, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
        """Latest history state per key among ``rows``' keys (None if the latest is a delete)."""
        if not rows:
            return {}
        keys = self.route.join_keys
        features = [n for n, _ in self.route.features]
        flt = None
        where: list[tuple[str, str, Any]] = []
        for k in keys:  # a superset filter per key column; exact matching happens below
            values = sorted({r[k] for r in rows})
            # The range lets file statistics (a Delta log's) and row-group statistics skip the parts of
            # the history that cannot hold the chunk's keys instead of reading it all per chunk.
            cond = (pc.field(k) >= values[0]) & (pc.field(k) <= values[-1]) & pc.field(k).isin(values)
            flt = cond if flt is None else flt & cond
            where += [(k, ">=", values[0]), (k, "<=", values[-1])]
        files = History(self.store, self.view).files(where)
        if not files:
            return {}
        dataset = ds.dataset(files, format="parquet", schema=history_schema(self.view))
        columns = [*keys, *features, "event_timestamp", "cdc_version", "cdc_deleted"]
        history = dataset.to_table(columns=columns, filter=flt).sort_by(
            [("event_timestamp", "ascending"), ("cdc_version", "ascending")]
        )
        latest: dict[str, dict[str, Any] | None] = {}
        for record in history.to_pylist():
            ident = _ident({k: record[k] for k in keys})
            latest[ident] = None if record["cdc_deleted"] else {f: record[f] for f in features}
        return latest


def _ident(keys: dict[str, Any]) -> str:
    return json.dumps(keys, sort_keys=True, default=str)


def _same(a: Any, b: Any) -> bool:
    """Equal as stored values, NaN equal to NaN (a float NaN never equals itself)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    raise ConfigError(f"timestamp column value {value!r} is not a timestamp", "name a timestamptz column")
