"""What Debezium sends for a row, computed from Postgres itself: the backfill and ``verify`` read a table with
``read_as`` and put each value in the JSON encoding the connector gives it (``debezium_encoding``), then
decode it with the stream's own decoder (streams/transform.py). So one row state becomes the same feature
values, keys and history bytes whichever way it arrives: one mapping per type (tested over every type the
README's "Postgres types" table lists, tests/integration/test_type_matrix.py).

The connector's settings this follows (connectors/shop-postgres.json): decimal.handling.mode=string,
time.precision.mode=isostring, interval.handling.mode=string, hstore.handling.mode=json,
binary.handling.mode=base64.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


def connect(conninfo: str) -> psycopg.Connection[Any]:
    """A connection to read rows as Debezium sees them: its session in UTC, as Debezium's replication
    session is when Kafka Connect runs in UTC (stack/jvm.py): zoned text, a tstzrange's, is then the same."""
    return psycopg.connect(conninfo, options="-c TimeZone=UTC")


def debezium_encoding(value: Any) -> Any:
    """A value as psycopg returns it, in the JSON encoding Debezium gives it with the connector's settings
    (connectors/shop-postgres.json), so the stream's decoder turns both into the same feature value.

    json, jsonb, uuid and numeric are selected as Postgres's own text (``_as_text``): that is what
    pgoutput hands Debezium, so re-serialising a parsed value could only differ.
    """
    if isinstance(value, list):
        return [debezium_encoding(v) for v in value]
    if isinstance(value, dict):  # an hstore (read_as selects it as hstore_to_json): hstore.handling.mode=json
        return hstore_json(value)
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):  # binary.handling.mode=base64
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime):  # time.precision.mode=isostring: UTC, "Z"
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return _iso_fraction(value.isoformat()) + "Z"
    if isinstance(value, date):
        return value.isoformat() + "Z"
    if isinstance(value, time):  # a timetz in UTC, as Debezium gives it
        if value.tzinfo is not None:
            value = datetime.combine(date(2000, 1, 1), value).astimezone(UTC).time()
        return _iso_fraction(value.replace(tzinfo=None).isoformat()) + "Z"
    return value


def _iso_fraction(text: str) -> str:
    """Debezium prints a fraction of a second without trailing zeros ("12:00:00.1"), none if it is zero."""
    body, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    return f"{body}.{fraction}" if fraction else body


# Columns read as Postgres's text output (see debezium_encoding).
_TEXT_TYPES = (sa.JSON, postgresql.JSONB, postgresql.JSON, sa.Uuid, sa.Numeric)


def _textual(kind: Any) -> bool:
    return isinstance(kind, _TEXT_TYPES) and not isinstance(kind, sa.Float)  # Float subclasses Numeric


def _as_text(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    if _textual(column.type):
        return sa.cast(column, sa.Text).label(column.name)
    if isinstance(column.type, sa.ARRAY) and _textual(column.type.item_type):
        return sa.cast(column, postgresql.ARRAY(sa.Text)).label(column.name)
    return column


# A date or timestamp Python cannot hold (Postgres 'infinity', a year after 9999) is read as its text in a
# column of this suffix instead (psycopg would fail the whole chunk): the view's type check then sends
# the row to the dead-letter topic naming the column, as the stream does.
BEYOND = "__beyond_python"


def hstore_json(pairs: Mapping[str, str | None]) -> str:
    """An hstore as Debezium's json mode writes it: pgjdbc parses it into a ``java.util.HashMap`` and Jackson
    writes that compactly, so the pairs come in the HashMap's iteration order and control characters are
    escaped as Jackson does (``\\u000E``, upper case; Python writes lower case)."""
    ordered = sorted(enumerate(pairs.items()), key=lambda item: (_bucket(item[1][0], len(pairs)), item[0]))
    text = json.dumps(dict(pair for _, pair in ordered), ensure_ascii=False, separators=(",", ":"))
    return _ESCAPE.sub(lambda m: m.group(1) + "\\u" + m.group(2).upper(), text)


_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})")


def _bucket(key: str, size: int) -> int:
    """The bucket of ``key`` in a Java HashMap holding ``size`` entries (default capacity 16, load factor
    0.75, doubled as it fills): String.hashCode over UTF-16 code units, spread as HashMap.hash does."""
    capacity = 16
    while size > capacity * 3 // 4:
        capacity *= 2
    h = 0
    units = key.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & (capacity - 1)


def read_as(column: sa.Column[Any]) -> list[sa.ColumnElement[Any]]:
    """How a column is selected so that ``debezium_encoding`` gives what Debezium sends for it."""
    kind = column.type
    if isinstance(
        kind, sa.Interval | postgresql.INTERVAL
    ):  # interval.handling.mode=string: Debezium's own ISO 8601 form
        parts = [
            sa.cast(sa.func.extract(f, column), sa.Integer)
            for f in ("year", "month", "day", "hour", "minute")
        ]
        seconds = sa.func.trim_scale(sa.func.extract("second", column))
        text = sa.func.format("P%sY%sM%sDT%sH%sM%sS", *parts, seconds)
        return [sa.case((column.is_(None), None), else_=text).label(column.name)]
    if isinstance(kind, postgresql.MONEY):  # Debezium: the amount as a plain decimal, not the locale's text
        return [sa.cast(sa.cast(column, sa.Numeric), sa.Text).label(column.name)]
    if isinstance(kind, postgresql.INET | postgresql.CIDR | postgresql.MACADDR | postgresql.MACADDR8):
        # Postgres's output text, as pgoutput sends it (format's %s; NULL stays NULL): inet's ::text adds "/32".
        return [sa.case((column.is_(None), None), else_=sa.func.format("%s", column)).label(column.name)]
    if isinstance(kind, postgresql.HSTORE):  # hstore.handling.mode=json
        return [sa.func.hstore_to_json(column).label(column.name)]
    if isinstance(kind, postgresql.ranges.AbstractRange | sa.types.NullType):
        # Ranges, and types SQLAlchemy does not know (citext, ...): Postgres's text, as pgoutput sends it.
        return [sa.cast(column, sa.Text).label(column.name)]
    if isinstance(kind, sa.DateTime | sa.Date):
        limit = sa.cast(sa.literal("10000-01-01"), column.type)
        held = sa.and_(sa.func.isfinite(column), column < limit)
        return [
            sa.case((held, column)).label(column.name),
            sa.case((sa.not_(held), sa.cast(column, sa.Text))).label(column.name + BEYOND),
        ]
    return [_as_text(column)]


def image_of(record: Mapping[str, Any], skip: Collection[str] = ()) -> dict[str, Any]:
    """A row read with ``read_as`` as Debezium's row image (the columns in ``skip`` left out): each value
    encoded, and a date or timestamp Python cannot hold as Postgres's text in its own column."""
    image = {k: debezium_encoding(v) for k, v in record.items() if k not in skip}
    for name in [k for k in image if k.endswith(BEYOND)]:
        beyond = image.pop(name)
        if beyond is not None:
            image[name.removesuffix(BEYOND)] = beyond
    return image
