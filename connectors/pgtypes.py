"""Postgres column types as the stream carries them into keys: which entity type holds each, and the one
form of a key value that the processor, the backfill, the history and ``verify`` all use.

A key is the value a client asks with: what psycopg returns for the column, as Feast's entity type holds
it (``client_key``). For most types that is what Debezium sends (numbers, text, uuid, enum, inet, bool,
bytea once its base64 is decoded). For the date and time types it is not: under
``time.precision.mode=isostring`` Debezium sends a date as ``2026-10-15Z``, which no client writes. The
processor cannot tell such a text from a text column's value (the messages carry no schema), so a view
declares the column's type in its ``cdc.key`` tag (``day=day::date``) and every reader converts with
``key_form``; ``feast-apply`` compares the declaration with the catalog and refuses a key the stream
would store in a form no one asks with (``key_problem``), naming the exact tag to write.

The forms (ISO 8601, as Python's ``isoformat`` prints psycopg's value):

| column type | entity type | key |
|---|---|---|
| smallint, integer | Int32 or Int64 | the number |
| bigint | Int64 | the number |
| numeric | String | its text as Postgres prints it (``12.50``: the scale kept; never ``1E-7``) |
| text, varchar, char, citext, name, enum, uuid | String | the text |
| inet, cidr, macaddr | String | the text as Postgres prints it (``10.0.0.1``, ``10.0.0.0/8``, ``::ffff:1.2.3.4``) |
| date (``::date``) | String | ``YYYY-MM-DD`` |
| timestamp (``::timestamp``) | String | ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` |
| timestamptz (``::timestamptz``) | String | the instant in UTC: ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`` |
| time (``::time``) | String | ``HH:MM:SS[.ffffff]`` |
| timetz (``::timetz``) | String | in UTC: ``HH:MM:SS[.ffffff]+00:00`` |
| bytea | Bytes | the bytes (not empty: Feast takes empty bytes for a missing key) |

A domain is keyed as its base type. Other types cannot be keys: a boolean because Feast's key encoding
has none, float, json, arrays, interval, money and ranges because equality on them is not what a client
can reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

import psycopg

# The casts a cdc.key column may declare, and the Postgres base types (pg_type.typname) they stand for.
CASTS = {
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "timetz": "timetz",
}
_TEXTS = (
    "text",
    "varchar",
    "bpchar",
    "citext",
    "name",
    "enum",
    "uuid",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
)
# base type -> (the Feast entity value types that hold it, the cast the key declaration needs)
KEY_TYPES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "int2": (("INT32", "INT64"), None),
    "int4": (("INT32", "INT64"), None),
    "int8": (("INT64",), None),
    "numeric": (("STRING",), None),
    **{t: (("STRING",), None) for t in _TEXTS},
    **{t: (("STRING",), cast) for cast, t in CASTS.items()},
    "bytea": (("BYTES",), None),
}
# Feast serialises entity keys of STRING, BYTES, INT32, INT64 and UNIX_TIMESTAMP values only
# (feast/infra/key_encoding_utils.py): a boolean key cannot be looked up at all.
_WHY_NOT = {
    "bool": "Feast's entity keys hold text, bytes and integers only (its key encoding has no boolean)",
}
_FEAST_NAMES = {"INT32": "Int32", "INT64": "Int64", "STRING": "String", "BYTES": "Bytes"}


def _iso_body(text: str) -> str:
    return text[:-1] if text.endswith("Z") else text


def _date(text: str) -> str:
    return date.fromisoformat(_iso_body(text)).isoformat()


def _timestamp(text: str) -> str:
    moment = datetime.fromisoformat(_iso_body(text))
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() if moment.tzinfo else moment.isoformat()


def _timestamptz(text: str) -> str:
    moment = datetime.fromisoformat(_iso_body(text))
    return (moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _time(text: str) -> str:
    return time.fromisoformat(_iso_body(text)).replace(tzinfo=None).isoformat()


def _timetz(text: str) -> str:
    return time.fromisoformat(_iso_body(text)).replace(tzinfo=UTC).isoformat()


_FORMS: dict[str, Callable[[str], str]] = {
    "date": _date,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "time": _time,
    "timetz": _timetz,
}


def key_form(cast: str) -> Callable[[Any], Any]:
    """Debezium's isostring text of a key column declared ``::cast`` -> the key a client asks with.

    None for a value that has no such form (Postgres ``infinity``, a year beyond 9999): the row then has no
    key and goes to the dead-letter topic, never into the store under a form no one asks with."""
    form = _FORMS[cast]

    def convert(raw: Any) -> Any:
        if not isinstance(raw, str):
            return None
        try:
            return form(raw)
        except ValueError:
            return None

    return convert


def client_key(value: Any) -> Any:
    """The key a client asks with for a value psycopg returned (the contract ``key_form`` meets)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        if value.tzinfo is None:
            return value.isoformat()
        moment = datetime.combine(date(2000, 1, 1), value).astimezone(UTC)
        return moment.timetz().isoformat()
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        return value or None  # Feast takes empty bytes for a missing value: no key
    if isinstance(value, Decimal):
        return format(value, "f")  # Postgres never prints an exponent: 0.0000001, not 1E-7
    if isinstance(value, IPv6Address | IPv6Interface | IPv6Network):
        return _ipv6_text(value)
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)  # uuid, IPv4 addresses and networks: their text, as Postgres prints it


def _ipv6_text(value: IPv6Address | IPv6Interface | IPv6Network) -> str:
    """An IPv6 inet or cidr as Postgres prints it: like Python, except that an address whose first 96 bits
    are zero (but not ``::`` or ``::1``-like ones) or an IPv4-mapped one ends in dotted IPv4."""
    address = (
        value
        if isinstance(value, IPv6Address)
        else value.network_address
        if isinstance(value, IPv6Network)
        else value.ip
    )
    prefix = (
        value.max_prefixlen
        if isinstance(value, IPv6Address)
        else value.network.prefixlen
        if isinstance(value, IPv6Interface)
        else value.prefixlen
    )
    words = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    tail = str(IPv4Address(address.packed[12:]))
    if words[:6] == [0] * 6 and words[6] != 0:
        text = "::" + tail
    elif words[:5] == [0] * 5 and words[5] == 0xFFFF:
        text = "::ffff:" + tail
    else:
        text = address.compressed
    if isinstance(value, IPv6Network) or prefix != value.max_prefixlen:
        text += f"/{prefix}"
    return text


@dataclass(frozen=True, slots=True)
class KeyColumn:
    """One join key of a view as its declaration gives it."""

    view: str
    table: str
    join_key: str
    column: str
    entity_type: str  # Feast's type name: INT64, STRING, ...
    cast: str | None  # the declared ::cast, if any
    declaration: str  # the view's whole key tag, to quote in a fix
    tag: str = "cdc.key"  # the tag that declares it (an aggregation view's: aggregation.key)


def column_types(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """Each column of ``table`` with its base type's ``typname`` (domains resolved, an enum as ``enum``,
    an array as ``_<element>``)."""
    rows = conn.execute(
        "WITH RECURSIVE base(name, oid) AS ("
        "  SELECT a.attname, a.atttypid FROM pg_attribute a"
        "  WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        "  UNION ALL SELECT b.name, t.typbasetype FROM base b JOIN pg_type t ON t.oid = b.oid"
        "  WHERE t.typtype = 'd') "
        "SELECT b.name, CASE WHEN t.typtype = 'e' THEN 'enum' ELSE t.typname END "
        "FROM base b JOIN pg_type t ON t.oid = b.oid WHERE t.typtype <> 'd'",
        (table,),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def key_problem(key: KeyColumn, base: str | None) -> str | None:
    """Why ``key`` would be stored in a form no client asks with, with the exact fix; None when it is right."""
    where = f"feature view {key.view}: key column {key.table}.{key.column}"
    if base is None:
        return None  # the capture checks report a missing column
    holders, cast = KEY_TYPES.get(base, ((), None))
    if not holders:
        why = _WHY_NOT.get(base, "no client can reproduce its equality")
        return (
            f"{where} is of type {base}, which cannot be a key ({why}); "
            "fix: key the view by an integer, text, uuid, date or timestamp column"
        )
    if key.entity_type not in holders:
        wanted = " or ".join(f"ValueType.{h}" for h in holders)
        return (
            f"{where} is {base}, but its entity's join key {key.join_key} is {_FEAST_NAMES.get(key.entity_type, key.entity_type)}; "
            f"fix: declare the entity with value_type={wanted} (and the field as {_FEAST_NAMES[holders[0]]})"
        )
    if key.cast != cast:
        fixed = _redeclared(key, cast)
        if cast is None:
            return f"{where} is {base}, not {key.cast}; fix: set {key.tag}='{fixed}'"
        return (
            f"{where} is a {base} column: Debezium sends it as ISO text with a 'Z' ('2026-10-15Z'), which no "
            f"client asks with; fix: set {key.tag}='{fixed}' (the key is then {_EXAMPLES[cast]})"
        )
    return None


_EXAMPLES = {
    "date": "'2026-10-15'",
    "timestamp": "'2026-10-15T12:30:00.5'-style ISO text",
    "timestamptz": "the UTC instant as '2026-10-15T12:30:00+00:00'",
    "time": "'12:30:00'",
    "timetz": "the UTC time as '12:30:00+00:00'",
}


def _redeclared(key: KeyColumn, cast: str | None) -> str:
    pairs = []
    for pair in key.declaration.split(","):
        join_key, _, column = (p.strip() for p in pair.partition("="))
        if join_key == key.join_key:
            column = key.column + (f"::{cast}" if cast else "")
        pairs.append(f"{join_key}={column}")
    return ",".join(pairs)


def key_problems(conn: psycopg.Connection[Any], keys: list[KeyColumn]) -> list[str]:
    """``key_problem`` of each key, reading each table's catalog once."""
    types: dict[str, dict[str, str]] = {}
    out = []
    for key in keys:
        if key.table not in types:
            types[key.table] = column_types(conn, key.table)
        problem = key_problem(key, types[key.table].get(key.column))
        if problem:
            out.append(problem)
    return out
