"""From a Debezium row image to a feature row: Debezium's JSON encodings decoded into Feast types.

The connector's encodings (connectors/shop-postgres.json): decimals as exact strings, date/time/
timestamp as ISO-8601 strings (a date as "2026-11-22Z"), json/jsonb as a JSON string, arrays as
JSON arrays, bytea as base64, NULL as null. A value that does not fit its declared type is passed through as it
came: the suite's type expectations then send its row to the dead-letter topic with the reason.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from feast.types import Array, Bytes, FeastType, PrimitiveFeastType

from connectors.pgtypes import key_form
from streams import pii
from streams.events import ChangeEvent
from streams.routes import Route

Converter = Callable[[Any], Any]


def decode_value(raw: Any, dtype: FeastType) -> Any:
    """Decode one Debezium JSON value into the Python value Feast expects for ``dtype``."""
    return converter(dtype)(raw)


def _int(raw: Any) -> Any:
    if isinstance(raw, int):  # bool too: passed through for the suite's type check
        return raw
    if isinstance(raw, str):
        return int(raw)
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


# decimal.handling.mode=string spells a numeric column's infinities so (NaN as "NaN").
_SPECIAL_NUMERIC = {"POSITIVE_INFINITY": float("inf"), "NEGATIVE_INFINITY": float("-inf")}


def _float(raw: Any) -> Any:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        special = _SPECIAL_NUMERIC.get(raw)
        return special if special is not None else float(Decimal(raw))  # exact text
    return raw


def _string(raw: Any) -> Any:
    if isinstance(raw, (dict, list)):
        return json.dumps(raw, separators=(",", ":"))
    return raw


def _bytes(raw: Any) -> Any:
    if isinstance(raw, str):  # binary.handling.mode=base64
        return base64.b64decode(raw, validate=True)
    return raw


def _time(raw: Any) -> Any:
    return parse_time(raw) if isinstance(raw, str) else datetime.fromtimestamp(raw / 1000, UTC)


_BY_KIND: dict[str, Converter] = {
    "INT64": _int,
    "INT32": _int,
    "FLOAT64": _float,
    "FLOAT32": _float,
    "STRING": _string,
    "BYTES": _bytes,
    "UNIX_TIMESTAMP": _time,
}


def _safe(convert: Converter) -> Converter:
    def decode(raw: Any) -> Any:
        if raw is None:
            return None
        try:
            return convert(raw)
        except (ValueError, InvalidOperation, OverflowError, TypeError, binascii.Error):
            return raw  # does not fit: the suite's type expectations send the row to the dead letters

    return decode


def _identity(raw: Any) -> Any:
    return raw


@functools.cache
def converter(dtype: FeastType) -> Converter:
    """The decoder of one Feast type (built once per type: the per-value path does no type dispatch)."""
    if isinstance(dtype, Array):
        element = converter(dtype.base_type)

        def array(raw: Any) -> Any:
            return [element(v) for v in raw] if isinstance(raw, list) else raw

        return _safe(array)
    kind = dtype.name if isinstance(dtype, PrimitiveFeastType) else str(dtype)
    convert = _BY_KIND.get(kind)
    return _safe(convert) if convert is not None else _identity


def key_converter(dtype: FeastType, cast: str | None) -> Converter:
    """The decoder of a join key: its declared column type's client form (connectors/pgtypes.py), else the
    entity type's decoder."""
    if cast:
        return key_form(cast)
    if dtype == Bytes:
        decode = converter(dtype)
        return lambda raw: decode(raw) or None  # Feast takes empty bytes for a missing key: no key
    return converter(dtype)


def keyless_reason(missing: list[str], key: Any) -> str:
    """Why a row with no value for join keys ``missing`` is a dead letter (its change's key is ``key``)."""
    return (
        f"no value for join key(s) {missing} (the change's key is {json.dumps(key, default=str)}): a NULL key "
        "column, a date or time beyond what a key can hold (infinity, a year after 9999), or an empty bytea "
        "(Feast takes it for a missing key); fix: key the view by a column that always has such a value"
    )


def parse_time(text: str) -> datetime:
    """Debezium isostring values: timestamps end in Z, dates too ("1990-05-17Z")."""
    body = text[:-1] if text.endswith("Z") else text
    if len(body) == 10:
        d = date.fromisoformat(body)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(body)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def commit_time(event: ChangeEvent) -> datetime:
    """The Postgres commit time of the change (Debezium ``source.ts_us``, else ``ts_ms``), UTC. The changes of one
    transaction share one object: a batch holds few distinct times, and a held transaction's rows pickle it
    once (stores/transactions.py ``pack``: a datetime is most of a row's pickling)."""
    if event.source_ts_us is not None:
        return _utc(event.source_ts_us)
    ms = event.source_ts_ms if event.source_ts_ms is not None else 0
    return _utc(ms * 1000)


@functools.lru_cache(maxsize=4096)
def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def absent_columns(image: Mapping[str, Any] | None, route: Route) -> list[str]:
    """Feature columns a row image does not hold at all (not NULL: absent): renamed or dropped in Postgres,
    or excluded by the connector. Writing NULL for them would be a silent wrong value."""
    if image is None:
        return []
    return [name for name in route.feature_names if name not in image]


def absent_reason(table: str, columns: list[str]) -> tuple[str, str]:
    """(problem, fix) for feature columns a row does not hold."""
    return (
        f"column(s) {', '.join(columns)} of {table} are not in the row (renamed or dropped in Postgres, or "
        "excluded by the connector's column.exclude.list)",
        f"change the view to the table's columns, `featurectl feast-apply`, then `featurectl snapshot {table}`",
    )


def feature_row(event: ChangeEvent, route: Route, handled: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Join keys and features of the row image the event leaves behind (``before`` for a delete)."""
    image = event.after if event.after is not None else (event.before or {})
    return row_from_image(image, route, event.key, handled)


def row_from_image(
    image: dict[str, Any],
    route: Route,
    key: dict[str, Any] | None = None,
    handled: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Join keys and features of a row image in Debezium's encodings (key columns may come from ``key``),
    with the view's PII handling applied (streams/pii.py) except to columns ``handled`` already (a
    replayed dead letter's)."""
    keys, features = _plan(route)
    row: dict[str, Any] = {}
    for join_key, column, convert in keys:
        source = image.get(column)
        if source is None and key:
            source = key.get(column)
        row[join_key] = convert(source)
    for name, convert, handling in features:
        if name not in row:
            value = convert(image.get(name))
            if handling is not None and not (handled and name in handled):
                value = pii.apply(handling, value)
            row[name] = value
    return row


Plan = tuple[tuple[tuple[str, str, Converter], ...], tuple[tuple[str, Converter, str | None], ...]]
_PLANS: dict[int, tuple[Route, Plan]] = {}  # by id: hashing a route per row would cost more than it saves


def _plan(route: Route) -> Plan:
    """Each key and feature of a route with its converter, built once per route object."""
    held = _PLANS.get(id(route))
    if held is not None and held[0] is route:  # the route is held, so its id is not reused meanwhile
        return held[1]
    casts = dict(route.key_casts)
    keys = tuple(
        (join_key, column, key_converter(dtype, casts.get(join_key)))
        for (join_key, column), (_, dtype) in zip(route.keys, route.key_types, strict=True)
    )
    handling = dict(route.pii)
    cast = dict(route.feature_casts)
    plan = (
        keys,
        tuple(
            (name, key_form(cast[name]) if name in cast else converter(dtype), handling.get(name))
            for name, dtype in route.features
        ),
    )
    if len(_PLANS) > 1024:  # routes are rebuilt on registry changes: forget old ones
        _PLANS.clear()
    _PLANS[id(route)] = (route, plan)
    return plan
