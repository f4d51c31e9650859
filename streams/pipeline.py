"""One micro-batch, from Kafka messages to sinks: decode -> route -> transform -> validate -> embed -> add.

Unchanged TOASTed columns (Debezium's placeholders) are filled in before validation with the
entity's previous value (streams/toast.py), so a placeholder never reaches a feature, the history or
a model.

Bad records become dead letters (returned as data, never raised): messages that are not Debezium
events, rows that fail their feature view's suite, rows of a view that has no suite or whose
embedding model cannot be loaded. Embedding runs after validation: invalid rows cost no model
time (the vector is computed, not read from the source, so there is nothing of it to validate). ``flush``
writes every sink; only after it returns may the caller commit the batch's offsets.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aggregations import rows as aggregation_rows
from aggregations.spec import AggregationView
from core import metrics
from core.errors import ConfigError
from stores.ordering import last_of_each_instant, version_of
from stores.sink import DELETE, UPSERT, OnlineSink, Sink, SinkRow
from streams.check import check
from streams.cut import Where, where
from streams.dlq import DeadLetterSink
from streams.embed import EmbeddingStep
from streams.events import ChangeEvent, DecodeError, KafkaMessage, decode, decode_marker
from streams.freshness import Freshness
from streams.routes import Route, table_policy
from streams.toast import unavailable_columns, unresolved_reason
from streams.transform import absent_columns, absent_reason, commit_time, feature_row, keyless_reason
from validation.validator import BatchValidator, describe

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    messages: int = 0
    rows: int = 0
    dead_letters: int = 0
    skipped: int = 0  # events of tables no feature view reads, tombstones, heartbeats

    def merge(self, other: BatchStats) -> BatchStats:
        return BatchStats(
            self.messages + other.messages,
            self.rows + other.rows,
            self.dead_letters + other.dead_letters,
            self.skipped + other.skipped,
        )


@dataclass
class _Pending:
    msg: KafkaMessage
    event: ChangeEvent
    route: Route
    row: dict[str, Any]
    unavailable: frozenset[str] = frozenset()  # features whose value the event lacks (unchanged TOAST)
    retract: bool = False  # an aggregation's source row its suite rejects: its contribution is removed
    rejected: bool = False  # set by the suite check of an aggregation view


@dataclass
class Pipeline:
    """Holds the sinks and the current routes; ``process`` a batch, then ``flush``."""

    online: OnlineSink
    offline: Sink
    dead_letters: DeadLetterSink
    validator: BatchValidator
    routes: dict[str, list[Route]] = field(default_factory=dict)
    freshness: Freshness = field(default_factory=Freshness)  # commit -> online write committed
    batch_freshness: Freshness = field(default_factory=Freshness)  # commit -> every sink written
    embedding: EmbeddingStep | None = None
    # The connector's <prefix>.transaction topic (provide.transaction.metadata): BEGIN/END markers, not changes.
    transaction_topic: str | None = None
    # Change events of the coming batch decoded already (the processor's, cutting it between transactions:
    # streams/cut.py), by topic, partition and offset; each used once.
    decoded: dict[Where, ChangeEvent] = field(default_factory=dict)
    _checks_s: float = field(default=0.0, init=False, repr=False)  # validate + embed time of this process()

    def __post_init__(self) -> None:
        self.embedding = self.embedding or EmbeddingStep(self.online)

    def process(
        self, messages: Sequence[KafkaMessage], only_view: str | None = None, attempt: int = 1
    ) -> BatchStats:
        """Add a batch to the sinks (nothing is written until ``flush``)."""
        started, self._checks_s = time.perf_counter(), 0.0
        stats = BatchStats(messages=len(messages))
        by_view: dict[str, list[_Pending]] = defaultdict(list)
        for msg in messages:
            if msg.topic() == self.transaction_topic:
                self._marker(msg, attempt, stats)
                continue
            try:
                event = self._decode(msg)
            except DecodeError as exc:
                self.dead_letters.add(
                    msg, f"not a Debezium change event: {exc.problem}", attempt=attempt, kind="decode"
                )
                stats.dead_letters += 1
                continue
            routes = [r for r in self.routes.get(event.table or "", []) if only_view in (None, r.view)]
            # A replayed dead letter holds its PII columns handled already (streams/pii.py). getattr, not an
            # isinstance of a runtime Protocol: this runs for every message.
            handled_by = getattr(msg, "pii_handled", None)
            handled = handled_by() if handled_by is not None else None
            if event.txn is not None:  # counted towards its transaction's END, whatever becomes of it
                self.online.add_seen(event.txn[0], event.txn[1], version_of(event)[0])
            if event.is_tombstone or not routes:
                stats.skipped += 1  # a tombstone follows a delete already handled
                continue
            if event.op == "t":
                # TRUNCATE: a batch boundary. Write what was committed before it, then delete every live
                # entity. Changes of other partitions committed after it stay pending, so the store never
                # holds them next to rows the truncate removes, nor does the truncate delete them offline.
                cut = version_of(event)
                later: dict[str, list[_Pending]] = defaultdict(list)
                for view, items in by_view.items():
                    later[view] = [p for p in items if version_of(p.event) >= cut]
                    items[:] = [p for p in items if version_of(p.event) < cut]
                self._write_views(by_view, stats, attempt)
                by_view = later
                self.flush()
                for route in routes:
                    self._truncate(event, route)
                continue
            for route in routes:
                error = route.error
                if route.aggregation is not None and not self.online.aggregates:
                    error = (
                        f"feature view {route.view} declares aggregations, which the {type(self.online).__name__} "
                        "online store does not compute; fix: serve it from a store that does (docs/aggregations.md)"
                    )
                if error:  # a broken declaration stops its own view only
                    self.dead_letters.add(
                        msg,
                        error,
                        view=route.view,
                        attempt=attempt,
                        kind="view_config",
                        pii_policy=self.pii_policy(event.table),
                    )
                    stats.dead_letters += 1
                    continue
                absent = absent_columns(event.after, route)
                if absent:
                    self.dead_letters.add(
                        msg,
                        "{}; fix: {}".format(*absent_reason(route.table, absent)),
                        view=route.view,
                        attempt=attempt,
                        kind="schema",
                        pii_policy=self.pii_policy(event.table),
                    )
                    stats.dead_letters += 1
                    continue
                missing = unavailable_columns(event.after, route.feature_names)
                row = feature_row(event, route, handled)
                if route.aggregation is not None:  # a contribution is keyed by its source row
                    row[aggregation_rows.ROW] = aggregation_rows.row_ident(event.key) if event.key else None
                by_view[route.view].append(_Pending(msg, event, route, row, missing))
        self._write_views(by_view, stats, attempt)
        metrics.STAGE_DURATION.labels("transform").observe(time.perf_counter() - started - self._checks_s)
        return stats

    def _decode(self, msg: KafkaMessage) -> ChangeEvent:
        if self.decoded:
            event = self.decoded.pop(where(msg), None)
            if event is not None:
                return event
        return decode(msg)

    def _marker(self, msg: KafkaMessage, attempt: int, stats: BatchStats) -> None:
        """A message of the transaction topic: an END tells the online store how many changes its transaction
        made (stores/transactions.py); a BEGIN says nothing the changes do not."""
        try:
            marker = decode_marker(msg)
        except DecodeError as exc:
            self.dead_letters.add(msg, exc.problem, attempt=attempt, kind="decode")
            stats.dead_letters += 1
            return
        if marker.partition != 0:
            raise ConfigError(
                f"the transaction topic {marker.topic} has more than one partition: its END markers are no "
                "longer in commit order, which atomic visibility of transactions relies on",
                "delete the topic and let the connector create it again with one partition "
                "(connectors/README.md, topic.creation.transactions.*)",
            )
        stats.skipped += 1
        if marker.status == "END" and marker.event_count is not None:
            self.online.add_end(marker.id, marker.event_count, marker.offset)

    def _write_views(self, by_view: dict[str, list[_Pending]], stats: BatchStats, attempt: int) -> None:
        for view, all_items in by_view.items():
            if not all_items:
                continue
            policy = self.pii_policy(all_items[0].route.table)  # dead letters keep handled values only
            items = self._fill_unchanged(view, all_items, stats, attempt, policy)
            if not items:
                continue
            upserts = [p for p in items if p.event.op != "d"]
            deletes = [p for p in items if p.event.op == "d"]
            started = time.perf_counter()
            spec = items[0].route.aggregation
            retracted: list[_Pending] = []
            try:
                valid = (
                    self._suite_check(
                        spec, upserts, self._type_check(spec, upserts, attempt, policy), attempt, policy
                    )
                    if spec
                    else check(
                        self.validator,
                        self.dead_letters,
                        view,
                        [p.row for p in upserts],
                        items[0].route.features,
                        [p.msg for p in upserts].__getitem__,
                        attempt,
                        policy,
                    )
                )
            except ConfigError as exc:
                for p in upserts:
                    self.dead_letters.add(
                        p.msg, str(exc), view=view, attempt=attempt, kind="view_config", pii_policy=policy
                    )
                stats.dead_letters += len(upserts)
                upserts = []
            else:
                stats.dead_letters += len(upserts) - len(valid)
                if spec:  # a row its suite or the type check rejects leaves every aggregate
                    retracted = [replace(p, retract=True) for p in upserts if p.rejected]
                upserts = [upserts[i] for i in valid]
            self._checks_s += self._observe("validate", started)
            rows: list[SinkRow] = []
            sources: list[_Pending] = []
            join_keys = items[0].route.join_keys  # one view, one route
            for p in upserts + deletes + retracted:
                keys = {k: p.row[k] for k in join_keys}
                if any(v is None for v in keys.values()):
                    self.dead_letters.add(
                        p.msg,
                        keyless_reason([k for k in join_keys if keys[k] is None], p.event.key)
                        if spec is None
                        else f"aggregation view {view} needs the source row's primary key (the message key); "
                        f"fix: give {p.route.table} a primary key, or set message.key.columns in the connector",
                        view=view,
                        attempt=attempt,
                        kind="join_key",
                        pii_policy=policy,
                    )
                    stats.dead_letters += 1
                    continue
                deleted = p.event.op == "d" or p.retract
                features = {} if deleted else {k: v for k, v in p.row.items() if k not in keys}
                version, minor = version_of(p.event)
                rows.append(
                    SinkRow(
                        view,
                        DELETE if deleted else UPSERT,
                        keys,
                        features,
                        commit_time(p.event),
                        version,
                        p.event.op,
                        p.event.where,
                        version_minor=minor,
                        position=(p.event.topic, p.event.partition, p.event.offset),
                        txn=p.event.txn[0] if p.event.txn is not None else None,
                    )
                )
                sources.append(p)
            embedding = items[0].route.embedding
            if embedding is not None and self.embedding is not None:
                started = time.perf_counter()
                try:
                    rows = self.embedding.apply(embedding, rows)
                except ConfigError as exc:  # the declared model cannot be loaded: park the rows
                    for p, r in zip(sources, rows, strict=True):
                        if r.op != DELETE:
                            self.dead_letters.add(
                                p.msg,
                                str(exc),
                                view=view,
                                attempt=attempt,
                                kind="view_config",
                                pii_policy=policy,
                            )
                            stats.dead_letters += 1
                    rows = [r for r in rows if r.op == DELETE]
                self._checks_s += self._observe("embed", started)
            rows.sort(key=lambda r: r.order)
            self.online.add(rows)
            self.offline.add(last_of_each_instant(rows))  # a transaction's intermediate states: not history
            stats.rows += len(rows)

    def _type_check(
        self, spec: AggregationView, items: list[_Pending], attempt: int, policy: dict[str, str]
    ) -> list[int]:
        """The indexes of ``items`` that can be contributions; the others go to the dead letters with why."""
        valid = []
        for i, p in enumerate(items):
            problem = aggregation_rows.type_problem(spec, p.row)
            if problem is None:
                valid.append(i)
                continue
            p.rejected = True
            self.dead_letters.add(
                p.msg, f"aggregation view {spec.view}: {problem}", view=spec.view, attempt=attempt,
                kind="expectations", pii_policy=policy,
            )  # fmt: skip
        return valid

    def _suite_check(
        self,
        spec: AggregationView,
        items: list[_Pending],
        typed: list[int],
        attempt: int,
        policy: dict[str, str],
    ) -> list[int]:
        """Of ``typed`` (indexes of ``items``), those whose source row passes the suite of the row view the
        aggregation declares (``aggregation.suite``), validated as that view validates it; the others are
        dead-lettered for the aggregation view with the failed expectations, and marked ``rejected``."""
        rows_route = next(r for r in self.routes.get(spec.table, []) if r.view == spec.suite_view)
        rows = [feature_row(items[i].event, rows_route) for i in typed]
        verdict = self.validator.validate(spec.suite_view, rows, rows_route.features)
        for j, failures in verdict.invalid.items():
            p = items[typed[j]]
            p.rejected = True
            self.dead_letters.add(
                p.msg, f"rejected by the suite of {spec.suite_view} (aggregation.suite): {describe(failures)}",
                [f.as_dict() for f in failures], spec.view, attempt, kind="expectations", pii_policy=policy,
            )  # fmt: skip
        return [typed[j] for j in verdict.valid]

    def _fill_unchanged(
        self, view: str, items: list[_Pending], stats: BatchStats, attempt: int, policy: dict[str, str]
    ) -> list[_Pending]:
        """Fill unchanged TOASTed features from the entity's previous state (streams/toast.py).

        Previous state: the entity's latest earlier row in this batch (items are in Kafka order, and
        one key's changes share a partition), else the online store's current row. A row whose
        previous state lacks a column goes to the dead letters with the reason and the fix.
        """
        if not any(p.unavailable for p in items):
            return items
        join_keys = items[0].route.join_keys

        def ident(p: _Pending) -> str:
            return json.dumps([p.row.get(k) for k in join_keys], default=str)

        wanted = {ident(p): {k: p.row[k] for k in join_keys} for p in items if p.unavailable}
        stored = self.online.current_features(view, list(wanted.values()))
        state = {k: row for k, row in zip(wanted, stored, strict=True) if row is not None}
        kept: list[_Pending] = []
        for p in items:
            key = ident(p)
            if p.event.op == "d":
                state.pop(key, None)
            elif p.unavailable:
                prior = state.get(key)
                lacking = [c for c in p.unavailable if prior is None or c not in prior]
                if prior is None or lacking:
                    reason = unresolved_reason(p.event.table or p.route.table, lacking)
                    self.dead_letters.add(
                        p.msg, reason, view=view, attempt=attempt, kind="unchanged_toast", pii_policy=policy
                    )
                    stats.dead_letters += 1
                    continue
                p.row.update({c: prior[c] for c in p.unavailable})
                logger.debug("%s: %s unchanged (TOAST), kept %s", p.event.where, view, sorted(p.unavailable))
            if p.event.op != "d":
                state[key] = p.row
            kept.append(p)
        return kept

    def _truncate(self, event: ChangeEvent, route: Route) -> None:
        when, (version, minor) = commit_time(event), version_of(event)
        rows = [
            SinkRow(
                route.view,
                DELETE,
                keys,
                {},
                when,
                version,
                "t",
                event.where,
                version_minor=minor,
                position=(event.topic, event.partition, event.offset),
            )
            for keys in self.online.live_keys(route.view)
        ]
        logger.info(
            "%s: TRUNCATE of %s deletes %d entities of %s; older changes of it are refused from now on",
            event.where,
            route.table,
            len(rows),
            route.view,
        )
        self.online.add_barrier(route.view, (version, minor))
        self.online.add(rows)
        self.offline.add(rows)

    def pii_policy(self, table: str | None) -> dict[str, str]:
        """How dead letters of ``table`` keep its PII columns: the strictest its views declare."""
        return table_policy(self.routes.get(table or "", []))

    def pii_policy_of(self, msg: KafkaMessage) -> dict[str, str]:
        """The PII policy of the table a raw message comes from ({} if it is not a change event)."""
        try:
            return self.pii_policy(decode(msg).table)
        except DecodeError:
            return {}

    @staticmethod
    def _observe(stage: str, started: float) -> float:
        took = time.perf_counter() - started
        metrics.STAGE_DURATION.labels(stage).observe(took)
        return took

    def flush(self) -> int:
        """Write every sink (online, offline, dead letters); returns online rows applied.

        Raises on failure; then nothing may be committed and the batch must be re-read.
        """
        started = time.perf_counter()
        applied = self.online.flush()
        self._observe("online_write", started)
        self.freshness.record(applied)  # readable online from here on
        _count_online(applied, self.online.last_skipped)
        if self.online.superseded:  # a transaction's earlier change, re-delivered after its last
            self.offline.forget(self.online.superseded)
        started = time.perf_counter()
        self.offline.flush()
        self._observe("offline_write", started)
        started = time.perf_counter()
        self.dead_letters.flush()
        self._observe("dead_letter_write", started)
        self.batch_freshness.record(applied)
        return len(applied)

    def committed(self) -> None:
        """The caller committed the offsets of everything flushed so far (Sink.committed)."""
        self.online.committed()
        self.offline.committed()

    def discard(self) -> None:
        """Drop every sink's buffered rows before a batch is re-read. Never raises: it runs while a failure
        is handled (a store lost mid-flush fails its rollback too), and the retry must still happen."""
        for sink in (self.online, self.offline, self.dead_letters):
            try:
                sink.discard()
            except Exception:
                logger.warning(
                    "could not discard %s's buffered rows cleanly", type(sink).__name__, exc_info=True
                )


def _count_online(applied: list[SinkRow], skipped: Sequence[SinkRow]) -> None:
    """Per-view counters and the commit-to-online histogram, for rows the online store made durable.
    Snapshot reads (``r``) carry their snapshot's time, not a commit's: no freshness sample."""
    now = datetime.now(UTC)
    per_view: dict[str, list[float]] = defaultdict(list)
    for row in applied:
        per_view[row.view].append((now - row.event_time).total_seconds() if row.cdc_op != "r" else -1.0)
    for view, ages in per_view.items():
        metrics.ROWS_WRITTEN.labels(view).inc(len(ages))
        metrics.observe_many(metrics.COMMIT_TO_ONLINE.labels(view), [age for age in ages if age >= 0])
    for row in skipped:
        metrics.ROWS_SKIPPED_OLDER.labels(row.view).inc()
