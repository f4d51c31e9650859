"""An aggregation feature view as a data engineer declares it in feature_repo/, parsed and checked.

Feast-native: a FeatureView whose tags name the source table and its columns, and whose fields each say
what they aggregate in a field tag::

    FeatureView(
        name="customer_orders",
        entities=[customer],
        schema=[
            Field(name="customer_id", dtype=Int64),
            Field(name="orders_24h", dtype=Int64, tags={"aggregation": "count() over 24h"}),
            Field(name="spent_7d", dtype=Float64, tags={"aggregation": "sum(amount) over 7d"}),
            Field(name="products_30d", dtype=Int64, tags={"aggregation": "count_distinct(product_id) over 30d"}),
            Field(name="last_statuses", dtype=Array(String), tags={"aggregation": "last(status, 5) over 30d"}),
            Field(name="paid_7d", dtype=Int64, tags={"aggregation": "count() over 7d where status = 'paid'"}),
        ],
        tags={
            "aggregation.table": "public.orders",
            "aggregation.key": "customer_id=customer_id",  # join key = the table's column (not its primary key)
            "aggregation.time": "ordered_at",              # the event-time column
            "aggregation.suite": "order_status",           # the row view whose suite each order must pass
        },
        ...
    )

The value each feature holds is defined once, in aggregations/semantics.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from core.errors import ConfigError

TABLE_TAG, KEY_TAG, TIME_TAG, FIELD_TAG = (
    "aggregation.table",
    "aggregation.key",
    "aggregation.time",
    "aggregation",
)
# The row view of the same table whose Great Expectations suite the source rows must pass: a row it rejects
# is no contribution (streams/pipeline.py retracts it), so a rejected order never moves a sum.
SUITE_TAG = "aggregation.suite"
FUNCTIONS = ("count", "sum", "avg", "min", "max", "count_distinct", "last")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_EXPRESSION = re.compile(
    r"^\s*(?P<function>\w+)\s*\(\s*(?P<column>\w*)\s*(?:,\s*(?P<k>\d+)\s*)?\)\s+over\s+(?P<n>\d+)\s*(?P<unit>[smhd])"
    r"(?:\s+where\s+(?P<filter>.+?))?\s*$"
)
# The optional filter: one comparison of a column with a number or a quoted text, or a NULL test.
_FILTER = re.compile(
    r"^(?P<column>\w+)\s*(?:(?P<op>=|!=|<=|>=|<|>)\s*(?:(?P<number>-?\d+(?:\.\d+)?)|'(?P<text>[^']*)')"
    r"|\s+(?P<null>is\s+null|is\s+not\s+null))$",
    re.IGNORECASE,
)
# What each function's feature must be declared as (Feast dtype names), so a lookup gets what it expects.
_DTYPES = {
    "count": ("Int64",),
    "count_distinct": ("Int64",),
    "sum": ("Float64",),
    "avg": ("Float64",),
    "min": ("Float64", "Int64", "String", "UnixTimestamp"),
    "max": ("Float64", "Int64", "String", "UnixTimestamp"),
    "last": ("Array(String)", "Array(Int64)", "Array(Float64)"),
}
EXAMPLE = (
    'tags={"aggregation": "sum(amount) over 7d"} (functions: '
    + ", ".join(FUNCTIONS)
    + "; windows: 30s, 15m, 24h, 7d)"
)


@dataclass(frozen=True)
class Filter:
    """``column op value``: a row counts only if it holds (SQL's rules: a NULL value passes only ``is null``)."""

    column: str
    op: str  # =, !=, <, <=, >, >=, "is null", "is not null"
    value: str | None = None  # the literal, as written
    numeric: bool = False  # compared as exact numbers (else as text)

    @property
    def text(self) -> str:
        if self.value is None:
            return f"{self.column} {self.op}"
        return f"{self.column} {self.op} {self.value if self.numeric else repr(self.value)}"


@dataclass(frozen=True)
class Aggregation:
    """One aggregated feature: ``function(column[, k]) over window``."""

    name: str
    function: str
    column: str | None
    window: timedelta
    k: int = 0  # last(k)
    dtype: Any = field(default=None, compare=False)  # the feature's Feast type (set from the view's field)
    where: Filter | None = None  # only rows whose image passes it count

    @property
    def text(self) -> str:
        args = ", ".join(x for x in (self.column or "", str(self.k) if self.k else "") if x)
        return f"{self.function}({args}) over {self.window}" + (
            f" where {self.where.text}" if self.where else ""
        )


@dataclass(frozen=True)
class AggregationView:
    """A feature view of aggregations over one source table, keyed by one of its columns."""

    view: str
    table: str
    join_key: str
    key_column: str
    time_column: str
    aggregations: tuple[Aggregation, ...]
    suite_view: str = ""  # the row view whose suite validates the source rows (SUITE_TAG)
    key_cast: str | None = None  # the key column's declared type (``day=day::date``: connectors/pgtypes.py)

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns the aggregations and their filters read (besides the key and the event time)."""
        return tuple(
            sorted(
                {a.column for a in self.aggregations if a.column}
                | {a.where.column for a in self.aggregations if a.where}
            )
        )

    @property
    def longest(self) -> timedelta:
        return max(a.window for a in self.aggregations)


def aggregation_problems(views: list[Any], unsupported_by: str | None = None) -> list[str]:
    """A line per view whose aggregation declaration is broken, or (``unsupported_by``: the online store,
    described with its fix) that the online store cannot serve: a view nothing computes would serve NULL
    as if it were a value."""
    problems = []
    for view in views:
        try:
            spec = aggregation_view(view)
        except ConfigError as exc:
            problems.append(f"{exc.problem} (fix: {exc.fix})")
            continue
        if spec is not None and unsupported_by is not None:
            problems.append(
                f"feature view {view.name} declares aggregations ({', '.join(a.name for a in spec.aggregations)}), "
                f"which are not computed by {unsupported_by} (docs/aggregations.md)"
            )
    return problems


def parse_expression(name: str, text: str, where: str) -> Aggregation:
    """``count() over 24h`` and the like; ConfigError naming the field, the text and the grammar."""
    found = _EXPRESSION.match(text)
    if found is None:
        raise ConfigError(f"{where}: field {name} aggregates {text!r}, which is not `function(column) over window`",
                          f"write it as {EXAMPLE}")  # fmt: skip
    function, column, k = found["function"], found["column"] or None, int(found["k"] or 0)
    if function not in FUNCTIONS:
        raise ConfigError(f"{where}: field {name}: unknown aggregation function {function!r}",
                          f"use one of {', '.join(FUNCTIONS)}")  # fmt: skip
    if function == "count" and column:
        raise ConfigError(f"{where}: field {name}: count() counts rows and takes no column",
                          "write count() over <window>, or count_distinct(column) for distinct values")  # fmt: skip
    if function != "count" and not column:
        raise ConfigError(f"{where}: field {name}: {function}() needs the column it aggregates",
                          f"write {function}(<column>) over <window>")  # fmt: skip
    if (function == "last") != bool(k):
        raise ConfigError(f"{where}: field {name}: " + ("last() needs how many values: last(column, k)"
                          if function == "last" else f"{function}() takes one column, no count"),
                          "write last(status, 5) over 30d for the 5 latest values")  # fmt: skip
    window = timedelta(**{_UNITS[found["unit"]]: int(found["n"])})
    if window <= timedelta(0):
        raise ConfigError(f"{where}: field {name}: the window must be longer than 0", "e.g. over 24h")
    condition = None
    if found["filter"]:
        cond = _FILTER.match(found["filter"].strip())
        if cond is None:
            raise ConfigError(f"{where}: field {name}: filter {found['filter']!r} is not `column op value`",
                              "write e.g. `count() over 24h where status = 'paid'` or `... where amount >= 100` or "
                              "`... where coupon is not null` (one comparison: =, !=, <, <=, >, >=)")  # fmt: skip
        if cond["null"]:
            condition = Filter(cond["column"], " ".join(cond["null"].lower().split()))
        elif cond["number"] is not None:
            condition = Filter(cond["column"], cond["op"], cond["number"], numeric=True)
        else:
            condition = Filter(cond["column"], cond["op"], cond["text"])
    return Aggregation(name, function, column, window, k, where=condition)


def _dtype_name(dtype: Any) -> str:
    text = str(dtype)
    return (
        text.replace("PrimitiveFeastType.", "").title().replace("Unix_Timestamp", "UnixTimestamp")
        if "(" not in text
        else text
    )


def is_aggregation_view(view: Any) -> bool:
    """Whether ``view`` is an aggregation view (its ``aggregation.table`` tag), without parsing it: for the
    jobs that treat such views apart (their history and online values are computed, not copied)."""
    return TABLE_TAG in view.tags


def aggregation_view(view: Any) -> AggregationView | None:
    """The aggregations ``view`` declares (None when it declares none); ConfigError for a broken declaration."""
    table = view.tags.get(TABLE_TAG)
    fields = [f for f in view.features if FIELD_TAG in (f.tags or {})]
    if not table and not fields:
        return None
    where = f"feature view {view.name}"
    missing = [t for t in (TABLE_TAG, KEY_TAG, TIME_TAG) if not view.tags.get(t)]
    if missing:
        raise ConfigError(f"{where} declares aggregations without the tag(s) {', '.join(missing)}",
                          f'add tags {{"{TABLE_TAG}": "public.orders", "{KEY_TAG}": "customer_id=customer_id", '
                          f'"{TIME_TAG}": "ordered_at"}}')  # fmt: skip
    if "cdc.table" in view.tags:
        raise ConfigError(f"{where} is both a row view (cdc.table) and an aggregation view ({TABLE_TAG})",
                          "declare the aggregations in a view of their own")  # fmt: skip
    join_key, sep, key_column = view.tags[KEY_TAG].partition("=")
    join_key, key_column = join_key.strip(), (key_column.strip() if sep else join_key.strip())
    key_column, _, cast = (part.strip() for part in key_column.partition("::"))
    if [join_key] != list(view.join_keys):
        raise ConfigError(f"{where}: {KEY_TAG} names join key {join_key!r}, the view's entity has {view.join_keys}",
                          f'write "{KEY_TAG}": "<join key>=<column of {table}>" with the view\'s one join key')  # fmt: skip
    plain = [f.name for f in view.features if FIELD_TAG not in (f.tags or {})]
    if plain:
        raise ConfigError(f"{where}: field(s) {', '.join(plain)} declare no aggregation",
                          f"give each feature of an aggregation view a tag, e.g. {EXAMPLE}")  # fmt: skip
    aggregations = []
    for f in fields:
        agg = parse_expression(f.name, f.tags[FIELD_TAG], where)
        declared = _dtype_name(f.dtype)
        if declared not in _DTYPES[agg.function]:
            raise ConfigError(f"{where}: field {f.name} is {declared}, and {agg.function}() gives "
                              f"{' or '.join(_DTYPES[agg.function])}",
                              f"declare Field(name={f.name!r}, dtype={_DTYPES[agg.function][0]})")  # fmt: skip
        aggregations.append(replace(agg, dtype=f.dtype))
    return AggregationView(
        view.name,
        str(table),
        join_key,
        key_column,
        view.tags[TIME_TAG].strip(),
        tuple(aggregations),
        view.tags.get(SUITE_TAG, "").strip(),
        cast or None,
    )
