"""``featurectl verify``: the online store compared with Postgres row by row, and repaired on request.

For each CDC view: the source table is read in primary-key order, ``chunk`` rows per query (keyset
pagination with SQLAlchemy: memory stays bounded), and every feature of every row is compared with
what the online store holds for its entity; an embedding's stored text hash must match the text
Postgres has now (the vector then is the text's, without running the model); and entities the
online store holds that Postgres no longer has are listed. Values are compared as the stream
encodes them: numbers as floats, timestamps in UTC to the second (what Feast keeps), JSON by value,
arrays element by element, NaN as missing (Feast stores a float NaN as null). Rows the stream dead-lettered (they fail the view's suite) count as
missing online: the store does not equal the source for them, and their reason is in
``featurectl dlq list``.

Repair: entities whose stored state is wrong or missing are re-streamed with a Debezium incremental
snapshot restricted to their keys (``additional-conditions``). Under the ordering model a snapshot
read replaces a wrong row but never a change committed after it (stores/ordering.py), so repairing
while the processor runs is safe. Entities online but gone from Postgres are deleted under their
stored version: a re-insert racing the repair has a higher version and wins.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import sqlalchemy as sa
from feast import FeatureStore, FeatureView
from feast.types import Array, FeastType, PrimitiveFeastType
from tqdm import tqdm

from connectors.definition import ConnectorDefinition
from core.settings import Settings
from embeddings.spec import text_hash
from stores.feast_layout import FeastLayoutSink
from stores.registry import open_online_sink
from stores.sink import DELETE, SinkRow
from streams import pii
from streams.routes import Route, route_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One entity whose online state differs from Postgres."""

    view: str
    keys: dict[str, Any]
    kind: str  # "differs", "missing online", "not in Postgres", "vector"
    detail: str

    def __str__(self) -> str:
        return f"{self.view} {json.dumps(self.keys, default=str)}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    view: str
    table: str
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    def keys(self, *kinds: str) -> list[dict[str, Any]]:
        return [m.keys for m in self.mismatches if not kinds or m.kind in kinds]


def same(online: Any, source: Any, dtype: FeastType) -> bool:
    """Whether an online value equals a Postgres value of a feature of ``dtype``, as the stream encodes it."""
    if online is None or source is None:
        # Feast stores a float NaN as a missing value (its proto conversion treats NaN as null).
        return (online is None and source is None) or (online is None and _is_nan(source))
    if isinstance(dtype, Array):
        if not isinstance(online, list | tuple) or not isinstance(source, list | tuple):
            return False
        return len(online) == len(source) and all(
            same(o, s, dtype.base_type) for o, s in zip(online, source, strict=True)
        )
    kind = dtype.name if isinstance(dtype, PrimitiveFeastType) else str(dtype)
    if kind in ("FLOAT64", "FLOAT32"):
        a, b = float(online), float(source)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b if kind == "FLOAT64" else math.isclose(a, b, rel_tol=1e-6)
    if kind in ("INT64", "INT32"):
        return bool(int(online) == int(source))
    if kind == "UNIX_TIMESTAMP":
        return _second(online) == _second(source)
    if kind == "STRING":
        if isinstance(source, dict | list):  # json/jsonb: equal by value, not by spacing
            try:
                return bool(json.loads(online) == source)
            except (TypeError, ValueError):
                return False
        return str(online) == (str(source) if isinstance(source, uuid.UUID | Decimal) else source)
    if kind == "BYTES":
        return bytes(online) == bytes(source)
    return bool(online == source)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float | Decimal) and value != value


def _second(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(float(value), UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


class Verifier:
    """Compares one view's online state with its source table. Constructing it connects nothing."""

    def __init__(self, store: FeatureStore, conninfo: str, view: FeatureView, chunk: int = 5000) -> None:
        route = route_for(view)
        assert route is not None, f"{view.name} is not fed by CDC"
        self.store, self.view, self.route, self.chunk = store, view, route, chunk
        self.engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo))

    def run(self, limit_keys: list[dict[str, Any]] | None = None) -> VerifyReport:
        """Compare every row (or only ``limit_keys``); the report lists every mismatch."""
        route = self.route
        report = VerifyReport(self.view.name, route.table)
        schema, _, name = route.table.partition(".")
        table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self.engine)
        key_cols = [table.c[column] for _, column in route.keys]
        sink = open_online_sink(self.store)
        seen: set[str] = set()
        try:
            with self.engine.connect() as conn:
                total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                bar = tqdm(
                    total=total, unit="rows", desc=f"verify {self.view.name}", file=sys.stderr, mininterval=2
                )
                last: list[Any] | None = None
                while True:
                    query = sa.select(table).order_by(*key_cols).limit(self.chunk)
                    if last is not None:
                        query = query.where(sa.tuple_(*key_cols) > sa.tuple_(*last))
                    if limit_keys is not None:
                        query = query.where(
                            sa.tuple_(*key_cols).in_([self._source_key(k) for k in limit_keys])
                        )
                    rows = [dict(r._mapping) for r in conn.execute(query)]
                    if not rows:
                        break
                    self._compare(sink, rows, report, seen)
                    last = [rows[-1][c.name] for c in key_cols]
                    bar.update(len(rows))
                bar.close()
            live = sink.live_keys(self.view.name)
            wanted = None if limit_keys is None else {_ident(k) for k in limit_keys}
            for keys in live:
                ident = _ident(keys)
                if ident not in seen and (wanted is None or ident in wanted):
                    report.mismatches.append(
                        Mismatch(self.view.name, keys, "not in Postgres", "present online")
                    )
        finally:
            sink.close()
        return report

    def recheck(self, report: VerifyReport, timeout_s: float) -> VerifyReport:
        """Re-verify ``report``'s entities until they match or ``timeout_s`` passes (after a repair,
        the processor needs a moment to apply the re-streamed rows)."""
        deadline = time.monotonic() + timeout_s
        keys = report.keys()
        while True:
            again = self.run(limit_keys=keys)
            if not again.mismatches or time.monotonic() >= deadline:
                return again
            time.sleep(1.0)

    def _source_key(self, keys: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(keys[join_key] for join_key, _ in self.route.keys)

    def _compare(
        self, sink: FeastLayoutSink, rows: list[dict[str, Any]], report: VerifyReport, seen: set[str]
    ) -> None:
        route = self.route
        keys = [{jk: row[col] for jk, col in route.keys} for row in rows]
        keys = [{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in ks.items()} for ks in keys]
        held = sink.current_features(self.view.name, keys)
        spec = route.embedding
        vectors = sink.stored_vectors(spec, keys) if spec is not None else [None] * len(rows)
        handling = dict(route.pii)  # the store holds PII columns handled (streams/pii.py): compare alike
        for source_row, ks, online, vector in zip(rows, keys, held, vectors, strict=True):
            row = {k: pii.apply(handling[k], v) if k in handling else v for k, v in source_row.items()}
            report.checked += 1
            seen.add(_ident(ks))
            if online is None:
                report.mismatches.append(
                    Mismatch(self.view.name, ks, "missing online", "absent from the online store")
                )
                continue
            differs = [
                f"{name}: online {_show(online.get(name))}, Postgres {_show(row.get(name))}"
                for name, dtype in route.features
                if not same(online.get(name), row.get(name), dtype)
            ]
            if differs:
                report.mismatches.append(Mismatch(self.view.name, ks, "differs", "; ".join(differs)))
            elif spec is not None:
                text = spec.text_of({name: row.get(name) for name, _ in route.features})
                if text is None and vector is not None:
                    report.mismatches.append(Mismatch(self.view.name, ks, "vector", "a vector for no text"))
                elif text is not None and (vector is None or vector.text_hash != text_hash(text)):
                    problem = "no vector" if vector is None else "the vector is of another text"
                    report.mismatches.append(Mismatch(self.view.name, ks, "vector", problem))


def repair(
    report: VerifyReport,
    store: FeatureStore,
    route: Route,
    restream: Callable[[dict[str, str]], object],
    filters: Callable[[str, list[str], list[tuple[Any, ...]]], list[str]],
) -> tuple[int, int]:
    """Re-stream wrong or missing entities, delete ones Postgres lacks.

    ``filters(table, columns, keys)`` splits the keys into snapshot filters that each fit one signal
    (jobs/snapshot.py ``key_filters``); ``restream({table: filter})`` snapshots one and waits for it.
    Returns (entities re-streamed, entities deleted)."""
    gone = report.keys("not in Postgres")
    if gone:
        sink = open_online_sink(store)
        try:
            stored = sink.stored_orders(report.view, gone)
            now = datetime.now(UTC)
            sink.add(
                [
                    SinkRow(
                        report.view, DELETE, keys, {}, now, order[0], "d", "verify --repair", None, order[1]
                    )
                    for keys, order in zip(gone, stored, strict=True)
                    if order is not None
                ]
            )
            sink.flush()
        finally:
            sink.close()
    wrong = report.keys("differs", "missing online", "vector")
    if wrong:
        columns = [col for _, col in route.keys]
        keys = [tuple(k[jk] for jk, _ in route.keys) for k in wrong]
        parts = filters(route.table, columns, keys)
        for i, condition in enumerate(parts, 1):
            logger.info("repair of %s: snapshot %d of %d", route.table, i, len(parts))
            restream({route.table: condition})
    return len(wrong), len(gone)


def _ident(keys: dict[str, Any]) -> str:
    return json.dumps({k: keys[k] for k in sorted(keys)}, default=str)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def verify_views(
    settings: Settings,
    store: FeatureStore,
    definition: ConnectorDefinition,
    views: list[FeatureView],
    conninfo: str,
    chunk: int = 5000,
    do_repair: bool = False,
    wait_s: float = 600,
    show: int = 20,
    echo: Callable[[str], None] = print,
) -> int:
    """Verify ``views`` (every CDC view when empty) against Postgres, and with ``do_repair`` re-stream
    the mismatched keys and delete those Postgres lacks, then check them again. Returns the number of
    mismatches left; reports each view through ``echo``."""
    from connectors.deploy import debezium_conninfo
    from jobs.snapshot import key_filters, snapshot

    selected = views or [v for v in store.list_feature_views() if v.tags.get("cdc.table")]
    # Repairs signal as Debezium's role (INSERT on the signal table only), not a superuser.
    signaller = debezium_conninfo(settings) if do_repair else ""
    remaining = 0
    for view in selected:
        verifier = Verifier(store, conninfo, view, chunk)
        report = verifier.run()
        echo(f"{view.name} ({report.table}): {report.checked} rows, {len(report.mismatches)} mismatches")
        for mismatch in report.mismatches[:show]:
            echo(f"  {mismatch}")
        if report.mismatches and do_repair:
            route = route_for(view)
            assert route is not None

            def restream(conditions: dict[str, str], table: str = route.table) -> object:
                return snapshot(
                    settings.kafka_client(),
                    signaller,
                    definition,
                    [table],
                    wait_s,
                    conditions,
                    connect_url=settings.connect_rest_url,
                )

            def filters(table: str, columns: list[str], keys: list[tuple[Any, ...]]) -> list[str]:
                return key_filters(signaller, definition, table, columns, keys)

            streamed, deleted = repair(report, store, route, restream, filters)
            echo(f"  repair: {streamed} re-streamed, {deleted} deleted; checking them again")
            report = verifier.recheck(report, wait_s)
            echo(f"  after repair: {len(report.mismatches)} mismatches")
            for mismatch in report.mismatches[:show]:
                echo(f"  {mismatch}")
        remaining += len(report.mismatches)
    return remaining
