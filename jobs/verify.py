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
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from feast import FeatureStore, FeatureView
from feast.types import Array, FeastType, PrimitiveFeastType
from sqlalchemy.dialects import postgresql
from tqdm import tqdm

from connectors.definition import ConnectorDefinition
from connectors.encoding import connect as connect_source
from connectors.encoding import image_of, read_as
from connectors.pgtypes import key_form, key_problems
from core.errors import FeatureCtlError
from core.settings import Settings
from embeddings.spec import text_hash
from stores import ttl
from stores.feast_layout import FeastLayoutSink
from stores.registry import open_online_sink
from stores.sink import DELETE, SinkRow
from streams.routes import Route, key_columns, route_for
from streams.transform import row_from_image

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
    expired: int = 0  # absent online because past the view's ttl (removed by compact), as reads serve them

    def keys(self, *kinds: str) -> list[dict[str, Any]]:
        return [m.keys for m in self.mismatches if not kinds or m.kind in kinds]


def same(online: Any, source: Any, dtype: FeastType) -> bool:
    """Whether an online value equals the value the stream makes of the Postgres row for a feature of
    ``dtype`` (both decoded by streams/transform.py; timestamps to the second, what Feast keeps)."""
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
    try:
        if kind in ("FLOAT64", "FLOAT32"):
            a, b = float(online), float(source)
            if math.isnan(a) or math.isnan(b):
                return math.isnan(a) and math.isnan(b)
            # A Float32 holds the float32 nearest Postgres's real: compare as float32 (also subnormals,
            # where Postgres prints 1e-45 for 1.4012985e-45 and a relative tolerance fails).
            return a == b if kind == "FLOAT64" else _float32(a) == _float32(b)
        if kind in ("INT64", "INT32"):
            return bool(int(online) == int(source))
        if kind == "UNIX_TIMESTAMP":
            return _second(online) == _second(source)
        if kind == "BYTES":
            return bytes(online) == bytes(source)
    except (TypeError, ValueError, OverflowError):
        return False  # a source value the stream dead-letters: never equal to what is online
    return bool(online == source)


def _float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _second(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(float(value), UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


class _Typed(sa.types.UserDefinedType[Any]):
    """A Postgres type by its ``format_type`` name, to cast key text to (any column type, domains too)."""

    cache_ok = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def get_col_spec(self, **_: Any) -> str:
        return self.spec


def pg_text(value: Any) -> str:
    """A key value as Postgres's input text for its column (bytes as ``\\x`` hex)."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


KEY_LABEL = "_featurectl_key"  # the key columns as text, for keyset pagination whatever their type


class Verifier:
    """Compares one view's online state with its source table. Constructing it connects nothing.

    Each source row is read as the backfill reads it (connectors/encoding.py) and decoded by the stream's
    own decoder, so its keys and values are exactly what the processor would have stored for it."""

    def __init__(self, store: FeatureStore, conninfo: str, view: FeatureView, chunk: int = 5000) -> None:
        route = route_for(view)
        assert route is not None, f"{view.name} is not fed by CDC"
        self.store, self.view, self.route, self.chunk = store, view, route, chunk
        self.engine = sa.create_engine("postgresql+psycopg://", creator=lambda: connect_source(conninfo))

    def key_problems(self) -> list[str]:
        """Why the view's keys would be stored in a form no client asks with (connectors/pgtypes.py)."""
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            return key_problems(raw, key_columns([self.route]))

    def run(self, limit_keys: list[dict[str, Any]] | None = None) -> VerifyReport:
        """Compare every row (or only ``limit_keys``, in chunks); the report lists every mismatch."""
        route = self.route
        report = VerifyReport(self.view.name, route.table)
        schema, _, name = route.table.partition(".")
        table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self.engine)
        key_cols = [table.c[column] for _, column in route.keys]
        labels = [f"{KEY_LABEL}{i}" for i in range(len(key_cols))]
        columns = [read for c in table.c for read in read_as(c)]
        columns += [sa.cast(c, sa.Text).label(label) for c, label in zip(key_cols, labels, strict=True)]
        sink = open_online_sink(self.store)
        seen: set[str] = set()
        try:
            with self.engine.connect() as conn:
                types = [_Typed(t) for t in _format_types(conn, route.table, [c.name for c in key_cols])]
                if limit_keys is None:
                    total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                    chunks: Iterator[Any] = self._pages(conn, columns, key_cols, labels, types)
                else:
                    total = len(limit_keys)
                    chunks = self._selected(conn, columns, key_cols, types, limit_keys)
                bar = tqdm(
                    total=total, unit="rows", desc=f"verify {self.view.name}", file=sys.stderr, mininterval=2
                )
                for rows in chunks:
                    self._compare(sink, rows, labels, report, seen)
                    bar.update(len(rows))
                bar.close()
            live = sink.live_keys(self.view.name)
            wanted = None if limit_keys is None else {_ident(k) for k in limit_keys}
            for keys in live:
                ident = _ident(keys)
                if ident not in seen and (wanted is None or ident in wanted):
                    report.mismatches.append(
                        Mismatch(
                            self.view.name, keys, "not in Postgres", self._old_form(keys) or "present online"
                        )
                    )
        finally:
            sink.close()
        return report

    def _pages(
        self,
        conn: sa.Connection,
        columns: list[Any],
        key_cols: list[sa.Column[Any]],
        labels: list[str],
        types: list[_Typed],
    ) -> Iterator[list[dict[str, Any]]]:
        """The whole table in key order, ``chunk`` rows per query (keyset pagination: bounded memory)."""
        last: list[str] | None = None
        while True:
            query = sa.select(*columns).order_by(*key_cols).limit(self.chunk)
            if last is not None:
                after = [sa.cast(sa.literal(v, sa.Text), t) for v, t in zip(last, types, strict=True)]
                query = query.where(sa.tuple_(*key_cols) > sa.tuple_(*after))
            rows = [dict(r._mapping) for r in conn.execute(query)]
            if not rows:
                return
            yield rows
            last = [rows[-1][label] for label in labels]

    def _selected(
        self,
        conn: sa.Connection,
        columns: list[Any],
        key_cols: list[sa.Column[Any]],
        types: list[_Typed],
        limit_keys: list[dict[str, Any]],
    ) -> Iterator[list[dict[str, Any]]]:
        """The rows of ``limit_keys``, ``chunk`` keys per query: each key column as one array parameter
        (``(a, b) IN (SELECT unnest(:a::date[]), unnest(:b::bigint[]))``), so the statement's size does not
        grow with the keys (a list of row literals exhausts Postgres's stack at a few thousand)."""
        casts = dict(self.route.key_casts)
        wanted = [
            [pg_text(k[jk]) for jk, _ in self.route.keys]
            for k in limit_keys
            if all(k.get(jk) is not None and _in_form(k[jk], casts.get(jk)) for jk, _ in self.route.keys)
        ]
        for start in range(0, len(wanted), self.chunk):
            part = wanted[start : start + self.chunk]
            arrays = [
                sa.func.unnest(
                    sa.cast(
                        sa.literal([k[i] for k in part], postgresql.ARRAY(sa.Text)), _Typed(t.spec + "[]")
                    )
                )
                for i, t in enumerate(types)
            ]
            query = sa.select(*columns).where(sa.tuple_(*key_cols).in_(sa.select(*arrays)))
            rows = [dict(r._mapping) for r in conn.execute(query)]
            if rows:
                yield rows

    def _old_form(self, keys: dict[str, Any]) -> str | None:
        """What is wrong with an online key in a form this view no longer writes (a date key stored as
        Debezium's ``2026-10-15Z`` before its ``::date`` was declared), or None."""
        for join_key, cast in self.route.key_casts:
            value = keys.get(join_key)
            if cast and isinstance(value, str) and not _in_form(value, cast):
                form = key_form(cast)(value)
                return (
                    f"stored under {join_key}={value!r}, Debezium's text, not the key clients ask with "
                    f"({form!r}); --repair deletes it and re-streams the row under its right key"
                )
        return None

    def recheck(self, report: VerifyReport, timeout_s: float) -> VerifyReport:
        """Re-verify ``report``'s entities until they match or ``timeout_s`` passes (after a repair,
        the processor needs a moment to apply the re-streamed rows)."""
        deadline = time.monotonic() + timeout_s
        keys = [k for m in report.mismatches if m.kind != "unkeyable" for k in [m.keys]]
        while True:
            again = self.run(limit_keys=keys)
            if not again.mismatches or time.monotonic() >= deadline:
                return again
            time.sleep(1.0)

    def _expired(self, sink: FeastLayoutSink, keys: list[dict[str, Any]]) -> set[str]:
        """Of ``keys`` (absent online), those whose stored change is past the view's ttl: removed as expired
        (compact), as a read would serve them, not lost."""
        limit = ttl.ttl_ns(self.view)
        if not limit or not keys:
            return set()
        now = ttl.clock()
        return {
            _ident(ks)
            for ks, stamp in zip(keys, sink.stored_stamps(self.view.name, keys), strict=True)
            if stamp is not None and stamp[1] is not None and now - stamp[1] * 1000 > limit
        }

    def _compare(
        self,
        sink: FeastLayoutSink,
        records: list[dict[str, Any]],
        labels: list[str],
        report: VerifyReport,
        seen: set[str],
    ) -> None:
        route = self.route
        decoded = [row_from_image(image_of(r, skip=labels), route) for r in records]
        keyed = [(r, {jk: r[jk] for jk in route.join_keys}) for r in decoded]
        for row, ks in keyed:
            if any(v is None for v in ks.values()):
                report.checked += 1
                source_key = {c: row.get(c) for _, c in route.keys}
                report.mismatches.append(
                    Mismatch(
                        self.view.name,
                        source_key,
                        "unkeyable",
                        "a key column's value has no key form (infinity, a year after 9999, an empty "
                        "bytea): the stream dead-letters the row (`featurectl dlq list`)",
                    )
                )
        keyed = [(r, ks) for r, ks in keyed if all(v is not None for v in ks.values())]
        keys = [ks for _, ks in keyed]
        held = sink.current_features(self.view.name, keys)
        spec = route.embedding
        vectors = sink.stored_vectors(spec, keys) if spec is not None else [None] * len(keys)
        expired = self._expired(sink, [ks for ks, online in zip(keys, held, strict=True) if online is None])
        for (row, ks), online, vector in zip(keyed, held, vectors, strict=True):
            report.checked += 1
            seen.add(_ident(ks))
            if online is None and _ident(ks) in expired:
                report.expired += 1
                continue
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


def _in_form(value: Any, cast: str | None) -> bool:
    """Whether a key value is in the form its declared cast gives (always, for an undeclared column)."""
    return cast is None or key_form(cast)(value) == value


def _format_types(conn: sa.Connection, table: str, columns: list[str]) -> list[str]:
    found: dict[str, str] = dict(
        conn.execute(
            sa.text(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": table},
        ).all()
    )
    return [str(found[c]) for c in columns]


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

    selected = views or [v for v in store.list_feature_views() if v.tags.get("cdc.table")]
    # Repairs signal as Debezium's role (INSERT on the signal table only), not a superuser.
    signaller = debezium_conninfo(settings) if do_repair else ""
    remaining = 0
    for view in selected:
        try:
            remaining += _verify_view(
                settings, store, definition, view, conninfo, chunk, do_repair, wait_s, show, echo, signaller
            )
        except (psycopg.Error, sa.exc.DBAPIError) as exc:
            raise FeatureCtlError(
                f"verify {view.name}: Postgres refused a query: {_short(exc)}",
                "check the view's table and the connection (`featurectl health`); `--chunk` smaller if it "
                "names a limit",
            ) from None
    return remaining


def _echo_mismatches(report: VerifyReport, show: int, echo: Callable[[str], None]) -> None:
    """A count per kind, then the first ``show`` mismatches of each kind (a few keys stored in an old form
    must not hide behind 100,000 that differ)."""
    kinds: dict[str, list[Mismatch]] = {}
    for mismatch in report.mismatches:
        kinds.setdefault(mismatch.kind, []).append(mismatch)
    if len(kinds) > 1:
        echo("  by kind: " + ", ".join(f"{kind} {len(found)}" for kind, found in kinds.items()))
    for found in kinds.values():
        for mismatch in found[:show]:
            echo(f"  {mismatch}")


def _short(exc: BaseException) -> str:
    """The database's own one-line message, never the statement (it can hold thousands of keys)."""
    original = getattr(exc, "orig", exc)
    diag = getattr(original, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(original)).splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


def _verify_view(
    settings: Settings,
    store: FeatureStore,
    definition: ConnectorDefinition,
    view: FeatureView,
    conninfo: str,
    chunk: int,
    do_repair: bool,
    wait_s: float,
    show: int,
    echo: Callable[[str], None],
    signaller: str,
) -> int:
    """One view of ``verify_views``: the mismatches left."""
    from jobs.snapshot import key_filters, snapshot

    remaining = 0
    verifier = Verifier(store, conninfo, view, chunk)
    wrong_keys = verifier.key_problems()
    report = verifier.run()
    expired = (
        f" ({report.expired} past the view's ttl {view.ttl}, removed online: not mismatches)"
        if report.expired
        else ""
    )
    echo(f"{view.name} ({report.table}): {report.checked} rows, {len(report.mismatches)} mismatches{expired}")
    for problem in wrong_keys:  # the stream stores keys no client asks with until the view is fixed
        echo(f"  keys: {problem}; then `featurectl feast-apply` and `featurectl verify {view.name} --repair`")
    remaining += len(wrong_keys)
    _echo_mismatches(report, show, echo)
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
        _echo_mismatches(report, show, echo)
    remaining += len(report.mismatches)
    return remaining
