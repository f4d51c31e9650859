"""From a Debezium row image to a feature row: Debezium's JSON encodings decoded into Feast types.

The connector's encodings (connectors/shop-postgres.json): decimals as exact strings, date/time/
timestamp as ISO-8601 strings (a date as "2026-11-22Z"), json/jsonb as a JSON string, arrays as
JSON arrays, bytea as base64, NULL as null. A value that does not fit its declared type is passed through as it
came: the suite's type expectations then send its row to the dead-letter topic with the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from feast.types import Array, FeastType, PrimitiveFeastType

from streams.events import ChangeEvent
from streams.routes import Route


def decode_value(raw: Any, dtype: FeastType) -> Any:
    """Decode one Debezium JSON value into the Python value Feast expects for ``dtype``."""
    if raw is None:
        return None
    if isinstance(dtype, Array):
        if not isinstance(raw, list):
            return raw
        return [decode_value(v, dtype.base_type) for v in raw]
    kind = dtype.name if isinstance(dtype, PrimitiveFeastType) else str(dtype)
    try:
        if kind in ("INT64", "INT32"):
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, int):
                return raw
            if isinstance(raw, str):
                return int(raw)
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
        elif kind in ("FLOAT64", "FLOAT32"):
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, (int, float)):
                return float(raw)
            if isinstance(raw, str):
                return float(Decimal(raw))  # decimal.handling.mode=string: exact text
        elif kind == "STRING":
            if isinstance(raw, (dict, list)):
                return json.dumps(raw, separators=(",", ":"))
        elif kind == "BOOL":
            return raw
        elif kind == "BYTES":
            if isinstance(raw, str):  # binary.handling.mode=base64
                return base64.b64decode(raw, validate=True)
        elif kind == "UNIX_TIMESTAMP":
            return parse_time(raw) if isinstance(raw, str) else datetime.fromtimestamp(raw / 1000, UTC)
    except (ValueError, InvalidOperation, OverflowError, TypeError, binascii.Error):
        return raw
    return raw


def parse_time(text: str) -> datetime:
    """Debezium isostring values: timestamps end in Z, dates too ("1990-05-17Z")."""
    body = text[:-1] if text.endswith("Z") else text
    if len(body) == 10:
        d = date.fromisoformat(body)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(body)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def commit_time(event: ChangeEvent) -> datetime:
    """The Postgres commit time of the change (Debezium ``source.ts_us``, else ``ts_ms``), UTC."""
    if event.source_ts_us is not None:
        return datetime.fromtimestamp(event.source_ts_us // 1_000_000, UTC).replace(
            microsecond=event.source_ts_us % 1_000_000
        )
    ms = event.source_ts_ms if event.source_ts_ms is not None else 0
    return datetime.fromtimestamp(ms / 1000, UTC)


def feature_row(event: ChangeEvent, route: Route) -> dict[str, Any]:
    """Join keys and features of the row image the event leaves behind (``before`` for a delete)."""
    image = event.after if event.after is not None else (event.before or {})
    return row_from_image(image, route, event.key)


def row_from_image(image: dict[str, Any], route: Route, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Join keys and features of a row image in Debezium's encodings (key columns may come from ``key``)."""
    row: dict[str, Any] = {}
    for (join_key, column), (_, dtype) in zip(route.keys, route.key_types, strict=True):
        source = image.get(column)
        if source is None and key:
            source = key.get(column)
        row[join_key] = decode_value(source, dtype)
    for name, dtype in route.features:
        if name not in row:
            row[name] = decode_value(image.get(name), dtype)
    return row
