"""Source rows as an aggregation view's contributions: what the processor stores, and values at read time.

The processor does not keep running aggregates. For an aggregation view it writes one *contribution* per
source row (keyed by the row's primary key, never by the aggregation key): the row's aggregation key, event
time and the raw values of the columns its functions read, under the same per-entity version guard,
tombstones, TRUNCATE barriers and fences as every feature row (stores/feast_layout.py). So:

- an update that moves an order to another customer rewrites that one contribution: the first customer
  loses it and the second gains it in one write, with no cross-partition regrouping (the source row's
  changes all arrive on one partition, in commit order);
- a redelivered, replayed or snapshot-read change whose version the row already has changes nothing;
- a delete leaves a tombstone version, so a late older change cannot bring the row back.

A read (``values``) takes the key's contributions whose event time lies in the longest window ending at the
read time and computes each function over those in its own window (aggregations/semantics.py): a window
sliding past old rows drops them with no new change, and min, max, distinct and last(k) are exact under
deletes. Values are stored as Debezium sent them (decimals as exact text) and typed here, per function.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from feast.types import Array, FeastType, Invalid, UnixTimestamp

from aggregations.semantics import Contribution, compute, exact, in_window
from aggregations.spec import Aggregation, AggregationView

ROW = "_row"  # the join key of a contribution: the source row's primary key, as canonical JSON
RAW: FeastType = Invalid  # a column kept as Debezium sent it (streams/transform.py passes it through)


def row_ident(key: Mapping[str, Any]) -> str:
    """The canonical text of a source row's primary key (Debezium's message key)."""
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"), default=str)


def row_entity_key(ident: str) -> bytes:
    """The bytes a contribution is stored under (not a Feast entity key: no Feast reader looks it up)."""
    return b"\x00row:" + ident.encode()


def source_features(spec: AggregationView, key_dtype: FeastType) -> tuple[tuple[str, FeastType], ...]:
    """The source columns a contribution holds, with the type the transform decodes them to: the key as
    the entity's type, the event time as a timestamp, the aggregated columns raw."""
    out = {spec.key_column: key_dtype, spec.time_column: UnixTimestamp}
    for column in spec.columns:
        out.setdefault(column, RAW)
    return tuple(out.items())


def type_problem(spec: AggregationView, features: Mapping[str, Any]) -> str | None:
    """Why a decoded row cannot be a contribution (a value of the wrong type), or None."""
    when = features.get(spec.time_column)
    if when is not None and not isinstance(when, datetime):
        return (
            f"event-time column {spec.time_column} holds {when!r}, not a timestamp; fix: make "
            f"{spec.time_column} a timestamp column, or name one in the view's aggregation.time tag"
        )
    for agg in spec.aggregations:
        raw = features.get(agg.column) if agg.column else None
        if raw is None:
            continue
        try:
            typed(agg, raw)
        except (ValueError, TypeError, InvalidOperation, ArithmeticError):
            return (
                f"column {agg.column} holds {raw!r}, which {agg.function}() of feature {agg.name} cannot "
                f"use; fix: aggregate a numeric column of finite values (not NaN or an infinity), or declare the "
                "feature's dtype as the column's type"
            )
    return None


def stored_values(spec: AggregationView, features: Mapping[str, Any]) -> dict[str, Any]:
    """The raw aggregated values of a contribution (JSON-serialisable: Debezium's own encoding)."""
    return {c: features.get(c) for c in spec.columns}


def _number(raw: Any) -> Decimal:
    """A finite number: NaN and the infinities (numeric's and float's, as Debezium spells them) have no sum,
    average or order a model could use, so a row holding one is no contribution (a dead letter)."""
    if isinstance(raw, bool):
        raise TypeError("a boolean is not a number")
    value = exact(raw)
    if not value.is_finite():
        raise ValueError(f"{raw!r} is not a finite number")
    return value


def _int(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise TypeError(f"{raw!r} is not an integer")
    return int(raw)


def _text(raw: Any) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw, separators=(",", ":"))


def _time(raw: Any) -> datetime:
    """Debezium's isostring timestamps ("...Z"; a date as "2026-11-22Z"), or epoch milliseconds."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return datetime.fromtimestamp(raw / 1000, UTC)
    body = raw[:-1] if raw.endswith("Z") else raw
    parsed = datetime.fromisoformat(body + "T00:00:00" if len(body) == 10 else body)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# How a raw value is compared or listed, by the feature's (or its list's element) Feast type.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "Float64": _number, "Float32": _number, "Int64": _int, "Int32": _int, "String": _text,
    "UnixTimestamp": _time,
}  # fmt: skip


def _converter(dtype: FeastType) -> Callable[[Any], Any]:
    convert = _CONVERTERS.get(str(dtype))
    if convert is None:
        raise TypeError(f"no aggregation of {dtype} values")
    return convert


def typed(agg: Aggregation, raw: Any, dtype: FeastType | None = None) -> Any:
    """A raw stored value as ``agg`` compares or adds it (None stays None)."""
    if raw is None:
        return None
    if agg.function in ("sum", "avg"):
        return _number(raw)
    if agg.function == "count_distinct":
        return raw if not isinstance(raw, float) else _number(raw)
    dtype = dtype if dtype is not None else agg.dtype
    if dtype is None:
        return raw
    if agg.function == "last" and isinstance(dtype, Array):
        return _converter(dtype.base_type)(raw)
    return _converter(dtype)(raw)


def values(
    spec: AggregationView,
    dtypes: Mapping[str, FeastType],
    stored: Iterable[tuple[str, int, int, datetime, Mapping[str, Any]]],
    at: datetime,
) -> dict[str, Any]:
    """Every feature of ``spec`` for one key at ``at``, from that key's stored contributions
    ``(row, version, minor, event time, raw values)`` (those outside every window may be included)."""
    rows = [
        (ident, (version, minor), when, raw)
        for ident, version, minor, when, raw in stored
        if at - spec.longest < when <= at
    ]
    out: dict[str, Any] = {}
    by_window: dict[Any, list[Any]] = {}
    for agg in spec.aggregations:
        # The rows in this window, found once per window (in_window: semantics.py's bounds).
        inside = by_window.get(agg.window)
        if inside is None:
            inside = by_window[agg.window] = [r for r in rows if in_window(r[2], at, agg)]
        dtype = dtypes.get(agg.name)
        contributions = [
            Contribution((ident,), version, when, _held(agg, raw, dtype))
            for ident, version, when, raw in inside
        ]
        out[agg.name] = compute(agg, contributions)
    return out


def _held(agg: Aggregation, raw: Mapping[str, Any], dtype: FeastType | None) -> dict[str, Any]:
    """What ``agg`` reads of a contribution: its filter's column as sent, its column typed for the function."""
    out = {agg.where.column: raw.get(agg.where.column)} if agg.where else {}
    if agg.column:
        out[agg.column] = typed(agg, raw.get(agg.column), dtype)
    return out


def outward(value: Any) -> Any:
    """A computed value as Feast serialises it (exact decimals leave as floats, at the very end)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [outward(v) for v in value]
    return value


def history_text(raw: Any) -> str | None:
    """A raw aggregated value as the history keeps it: Debezium's text (a decimal exact), else its JSON."""
    if raw is None or isinstance(raw, str):
        return raw
    return json.dumps(raw)
