"""Aggregation views' contributions in a SQL online store (SQLite, Postgres): write, evict, read at read time.

One table per store (``featurectl_contributions``): per (view, source row) the row's aggregation key, event
time (µs), version and raw aggregated values (aggregations/rows.py). The sinks write it inside their flush
transaction, after the version guard decided which rows apply, so a contribution changes exactly when the
row's stored version does. Readers (the Feast plugins) take a key's rows in the longest window ending at the
read time, through the index on (view, agg_key, event_us).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregations import rows as aggregation_rows
from aggregations.spec import AggregationView
from stores.ordering import EPOCH, epoch_us
from stores.sink import SinkRow

TABLE = "featurectl_contributions"
_PREFIX = len(aggregation_rows.row_entity_key(""))


def ident_of(entity_key: bytes) -> str:
    """The source row's key text from the bytes a contribution's version is stored under."""
    return bytes(entity_key)[_PREFIX:].decode()


def records(
    spec: AggregationView, rows: Iterable[SinkRow], now: datetime | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """(view, source_row, agg_key, event_us, version, version_minor, vals) of upserted contributions, and the
    (view, source_row) of those already past every window ending now or later: no read can reach them, so they
    are not stored (a stored earlier version of the row is deleted); their versions are, by the caller."""
    out, expired = [], []
    floor = (now or datetime.now(UTC)) - spec.longest
    for row in rows:
        key = row.features.get(spec.key_column)
        when = row.features.get(spec.time_column)
        if when is not None and when <= floor:
            expired.append((spec.view, row.keys[aggregation_rows.ROW]))
            continue
        out.append(
            (
                spec.view,
                row.keys[aggregation_rows.ROW],
                None if key is None else str(key),
                None if when is None else epoch_us(when),
                row.version,
                row.version_minor,
                json.dumps(aggregation_rows.stored_values(spec, row.features), separators=(",", ":")),
            )
        )
    return out, expired


def upsert_sql(mark: str) -> str:
    marks = ", ".join([mark] * 7)
    return (
        f"INSERT INTO {TABLE} (view, source_row, agg_key, event_us, version, version_minor, vals) VALUES ({marks}) "
        "ON CONFLICT (view, source_row) DO UPDATE SET agg_key = excluded.agg_key, event_us = excluded.event_us, "
        "version = excluded.version, version_minor = excluded.version_minor, vals = excluded.vals"
    )


def delete_sql(mark: str) -> str:
    return f"DELETE FROM {TABLE} WHERE view = {mark} AND source_row = {mark}"


def evict_sql(mark: str) -> str:
    """Contributions no window ending now or later can reach (their row versions stay in the versions table,
    so a replayed older change of the row is still refused)."""
    return f"DELETE FROM {TABLE} WHERE view = {mark} AND event_us <= {mark}"


def evict_before(spec: AggregationView, now: datetime) -> int:
    return epoch_us(now - spec.longest)


def read_sql(mark: str, keys: int) -> str:
    marks = ", ".join([mark] * keys)
    return (
        f"SELECT agg_key, source_row, version, version_minor, event_us, vals FROM {TABLE} "
        f"WHERE view = {mark} AND agg_key IN ({marks}) AND event_us > {mark} AND event_us <= {mark}"
    )


def read_params(spec: AggregationView, keys: Sequence[str], at: datetime) -> list[Any]:
    return [spec.view, *keys, epoch_us(at - spec.longest), epoch_us(at)]


def by_key(
    found: Iterable[tuple[Any, ...]],
) -> dict[str, list[tuple[str, int, int, datetime, dict[str, Any]]]]:
    """Rows of ``read_sql`` grouped by aggregation key, as aggregations.rows.values takes them."""
    out: dict[str, list[tuple[str, int, int, datetime, dict[str, Any]]]] = {}
    for agg_key, row, version, minor, event_us, vals in found:
        when = EPOCH + timedelta(microseconds=int(event_us))
        out.setdefault(str(agg_key), []).append((row, int(version), int(minor), when, json.loads(vals)))
    return out


_READ_AT: ContextVar[datetime | None] = ContextVar("featurectl_read_at", default=None)


@contextmanager
def reading_at(at: datetime) -> Iterator[None]:
    """Aggregation views read inside compute their windows as of ``at``, not each read's own now: a lookup's
    views as of one instant, the one its served log records as the request's time. With two clocks, an order
    leaving a window between them was served yet absent from the history as of the logged time (real skew
    reported by ``featurectl consistency`` where there was none, 2026-11-29)."""
    token = _READ_AT.set(at)
    try:
        yield
    finally:
        _READ_AT.reset(token)


def now() -> datetime:
    """The read instant ``reading_at`` set, else the wall clock."""
    return _READ_AT.get() or datetime.now(UTC)


def online_read(
    execute: Any,
    mark: str,
    view: Any,
    spec: AggregationView,
    entity_keys: Sequence[Any],
    requested: Sequence[str] | None,
    at: datetime | None = None,
) -> list[tuple[datetime | None, dict[str, Any] | None]]:
    """Feast's ``online_read`` answer for an aggregation view, computed at ``at`` (default: now).

    ``execute(sql, params)`` returns rows. Every requested entity gets a value (a key with no rows in
    the window has count 0, sum NULL), stamped with the read time: the value is as of that instant."""
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

    at = at or now()
    dtypes = {f.name: f.dtype for f in view.features}
    wanted = [a.name for a in spec.aggregations if requested is None or a.name in requested]
    keys = []
    for entity_key in entity_keys:
        values = dict(zip(entity_key.join_keys, entity_key.entity_values, strict=True))
        value = values.get(spec.join_key)
        keys.append(None if value is None else str(feast_value_type_to_python_type(value)))
    distinct = sorted({k for k in keys if k is not None})
    stored: dict[str, list[tuple[str, int, int, datetime, dict[str, Any]]]] = {}
    for i in range(0, len(distinct), 500):
        chunk = distinct[i : i + 500]
        stored.update(by_key(execute(read_sql(mark, len(chunk)), read_params(spec, chunk, at))))
    computed = {key: aggregation_rows.values(spec, dtypes, stored.get(key, []), at) for key in distinct}
    protos: dict[str, dict[str, Any]] = {key: {} for key in distinct}
    for name in wanted:  # one conversion per feature for every key (Feast's converter is per list)
        present = [key for key in distinct if computed[key][name] is not None]
        outgoing = [aggregation_rows.outward(computed[key][name]) for key in present]
        converted = python_values_to_proto_values(outgoing, dtypes[name].to_value_type()) if outgoing else []
        for key, proto in zip(present, converted, strict=True):
            protos[key][name] = proto
        for key in distinct:
            protos[key].setdefault(name, ValueProto())
    return [(None, None) if key is None else (at, dict(protos[key])) for key in keys]
