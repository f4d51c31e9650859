"""Aggregations: the declaration's errors, and the retractable state against the brute-force oracle
(aggregations/semantics.py) over random change logs: inserts, updates, deletes, key moves, backdated and
future event times, duplicate deliveries, at window edges exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from feast import Entity, FeatureView, Field
from feast.types import Array, Float64, Int64, String
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregations.offline import values_at
from aggregations.semantics import Change, oracle
from aggregations.spec import Aggregation, aggregation_problems, aggregation_view, parse_expression
from aggregations.state import AggregationState
from core.errors import ConfigError

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
AGGS = [
    parse_expression("orders_1h", "count() over 1h", "t"),
    parse_expression("spent_30m", "sum(amount) over 30m", "t"),
    parse_expression("avg_2h", "avg(amount) over 2h", "t"),
    parse_expression("min_1h", "min(amount) over 1h", "t"),
    parse_expression("max_1h", "max(amount) over 1h", "t"),
    parse_expression("products_1h", "count_distinct(product_id) over 1h", "t"),
    parse_expression("last_statuses", "last(status, 3) over 2h", "t"),
    parse_expression("paid_1h", "count() over 1h where status = 'paid'", "t"),
    parse_expression("big_30m", "sum(amount) over 30m where amount >= 10", "t"),
    parse_expression("unknown_2h", "count() over 2h where status is null", "t"),
    parse_expression("not_new", "last(product_id, 2) over 1h where status != 'new'", "t"),
]
LONGEST = max(a.window for a in AGGS)

# One change: which row, deleted or not, its customer, event time (minutes from T0, backdated or ahead of
# its commit), amount (an exact decimal, as the processor decodes Debezium's numeric, or NULL), status, product.
change_spec = st.tuples(
    st.integers(0, 4),
    st.booleans(),
    st.sampled_from(["a", "b", "c"]),
    st.integers(-30, 150),
    st.one_of(st.none(), st.decimals(min_value=-100, max_value=100, places=2)),
    st.sampled_from(["new", "paid", "shipped", None]),
    st.integers(1, 4),
)


def build_log(specs: list[tuple[Any, ...]], gaps: list[int]) -> list[Change]:
    """Changes in commit order: version i, committed ``gaps`` seconds apart."""
    log, committed = [], T0
    for i, ((row, deleted, key, minutes, amount, status, product), gap) in enumerate(
        zip(specs, gaps, strict=False)
    ):
        committed += timedelta(seconds=gap)
        log.append(
            Change(
                (row,), (1000 + i, 0), committed, deleted,
                None if deleted else key,
                None if deleted else T0 + timedelta(minutes=minutes),
                () if deleted else (("amount", amount), ("status", status), ("product_id", product)),
            )
        )  # fmt: skip
    return log


def read_times(log: list[Change], after: datetime) -> list[datetime]:
    """Every window edge the log makes (an event time, just before it, a window's length after it, and a
    microsecond either side), from ``after`` on."""
    times = {after}
    for c in log:
        if c.event_time is None:
            continue
        for agg in AGGS:
            for t in (c.event_time, c.event_time + agg.window):
                times.update((t - US, t, t + US))
    return sorted(t for t in times if t >= after)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(change_spec, min_size=1, max_size=25),
    gaps=st.lists(st.integers(0, 900), min_size=25, max_size=25),
    redeliver=st.lists(st.integers(0, 24), max_size=10),
)
def test_the_state_equals_the_oracle_at_every_window_edge(
    specs: list[tuple[Any, ...]], gaps: list[int], redeliver: list[int]
) -> None:
    log = build_log(specs, gaps)
    # Delivered in order, some changes again later (a redelivery, a snapshot re-read, a replay).
    deliveries = list(log) + [log[i] for i in redeliver if i < len(log)]
    state = AggregationState()
    for applied, change in enumerate(deliveries, start=1):
        state.apply(change)
        now = max(c.committed for c in deliveries[:applied])
        for at in (now, now + timedelta(minutes=45)):
            for key in ("a", "b", "c"):
                for agg in AGGS:
                    assert state.value(key, agg, at) == oracle(deliveries[:applied], key, at, agg), (
                        agg.text,
                        key,
                        at,
                    )
    now = max(c.committed for c in log)
    evicted = AggregationState(rows=dict(state.rows), by_key={k: dict(v) for k, v in state.by_key.items()})
    evicted.evict(now, LONGEST)
    for at in read_times(log, now):
        for key in ("a", "b", "c"):
            for agg in AGGS:
                expected = oracle(log, key, at, agg)
                assert state.value(key, agg, at) == expected, (agg.text, key, at)
                assert evicted.value(key, agg, at) == expected, ("after evict", agg.text, key, at)


def test_a_sum_after_adds_and_retracts_is_exact() -> None:
    """0.1 + 0.2 - 0.1 - 0.2 is 0 (a float running sum leaves 5.55e-17)."""
    agg = parse_expression("s", "sum(amount) over 1h", "t")
    state = AggregationState()
    for i, amount in enumerate(["0.1", "0.2"]):
        state.apply(Change((i,), (i, 0), T0, False, "a", T0, (("amount", amount),)))
    assert state.value("a", agg, T0) == Decimal("0.3")
    for i in range(2):
        state.apply(Change((i,), (10 + i, 0), T0, True))
    assert state.value("a", agg, T0) is None
    state.apply(Change((5,), (20, 0), T0, False, "a", T0, (("amount", "0"),)))
    assert state.value("a", agg, T0) == 0


def test_min_max_distinct_and_last_are_exact_after_the_extreme_is_deleted() -> None:
    state = AggregationState()
    amounts = {1: Decimal("5"), 2: Decimal("50"), 3: Decimal("7")}
    for row, amount in amounts.items():
        state.apply(
            Change((row,), (row, 0), T0, False, "a", T0 + timedelta(minutes=row), (("amount", amount),))
        )
    at = T0 + timedelta(minutes=10)
    top = Aggregation("m", "max", "amount", timedelta(hours=1))
    assert state.value("a", top, at) == Decimal("50")
    state.apply(Change((2,), (9, 0), T0, True))  # the maximum deleted: no daily correction needed
    assert state.value("a", top, at) == Decimal("7")
    last = Aggregation("l", "last", "amount", timedelta(hours=1), 2)
    assert state.value("a", last, at) == [Decimal("7"), Decimal("5")]


def test_a_window_slides_past_old_rows_with_no_new_change() -> None:
    state = AggregationState()
    state.apply(Change((1,), (1, 0), T0, False, "a", T0, (("amount", "1"),)))
    count = Aggregation("c", "count", None, timedelta(hours=24))
    assert state.value("a", count, T0 + timedelta(hours=24) - US) == 1
    assert (
        state.value("a", count, T0 + timedelta(hours=24)) == 0
    )  # (T - 24h, T]: exactly 24 h later it is out


def view_with(fields: list[Field], **tags: str) -> FeatureView:
    customer = Entity(name="customer", join_keys=["customer_id"])
    return FeatureView(
        name="customer_orders",
        entities=[customer],
        schema=[Field(name="customer_id", dtype=Int64), *fields],
        tags=tags,
    )


TAGS = {
    "aggregation.table": "public.orders",
    "aggregation.key": "customer_id=customer_id",
    "aggregation.time": "ordered_at",
}


def test_a_declared_aggregation_view_is_parsed() -> None:
    view = view_with(
        [
            Field(name="orders_24h", dtype=Int64, tags={"aggregation": "count() over 24h"}),
            Field(name="spent_7d", dtype=Float64, tags={"aggregation": "sum(amount) over 7d"}),
            Field(
                name="last_statuses", dtype=Array(String), tags={"aggregation": "last(status, 5) over 30d"}
            ),
        ],
        **TAGS,
    )
    spec = aggregation_view(view)
    assert spec is not None
    assert (spec.table, spec.key_column, spec.time_column) == ("public.orders", "customer_id", "ordered_at")
    assert [a.text for a in spec.aggregations] == [
        "count() over 1 day, 0:00:00",
        "sum(amount) over 7 days, 0:00:00",
        "last(status, 5) over 30 days, 0:00:00",
    ]
    assert spec.columns == ("amount", "status") and spec.longest == timedelta(days=30)


@pytest.mark.parametrize(
    ("field", "tags", "message"),
    [
        (Field(name="x", dtype=Int64, tags={"aggregation": "count(amount) over 1h"}), TAGS, "takes no column"),
        (Field(name="x", dtype=Float64, tags={"aggregation": "sum() over 1h"}), TAGS, "needs the column"),
        (Field(name="x", dtype=Float64, tags={"aggregation": "median(amount) over 1h"}), TAGS, "unknown aggregation"),
        (Field(name="x", dtype=Float64, tags={"aggregation": "sum(amount) for a week"}), TAGS, "is not `function"),
        (Field(name="x", dtype=Int64, tags={"aggregation": "sum(amount) over 1h"}), TAGS, "gives Float64"),
        (Field(name="x", dtype=Array(String), tags={"aggregation": "last(status) over 1h"}), TAGS, "last(column, k)"),
        (Field(name="x", dtype=Int64, tags={"aggregation": "count() over 1h"}),
         {"aggregation.table": "public.orders"}, "without the tag(s) aggregation.key, aggregation.time"),
        (Field(name="x", dtype=Int64), TAGS, "declare no aggregation"),
    ],
)  # fmt: skip
def test_a_broken_declaration_names_the_problem_and_the_fix(
    field: Field, tags: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        aggregation_view(view_with([field], **tags))
    assert message in str(err.value)


def test_feast_apply_refuses_aggregation_views_a_store_cannot_serve() -> None:
    """A view nothing computes would serve NULL as a value: `featurectl feast-apply` lists it (streams/apply.py),
    and a broken declaration on any store."""
    good = view_with(
        [Field(name="orders_24h", dtype=Int64, tags={"aggregation": "count() over 24h"})], **TAGS
    )
    broken = view_with([Field(name="x", dtype=Int64, tags={"aggregation": "sum() over 1h"})], **TAGS)
    plain = view_with([Field(name="segment", dtype=String)])
    problems = aggregation_problems([good, broken, plain], "the Redis online store; use X")
    assert len(problems) == 2
    assert (
        "declares aggregations (orders_24h), which are not computed by the Redis online store" in problems[0]
    )
    assert "needs the column it aggregates" in problems[1] and "fix:" in problems[1]
    assert aggregation_problems([good, plain]) == []  # a store that computes them


def history_table(
    con: Any, log: list[Change], amount: str = "DECIMAL(12, 2)", stored: Callable[[Any], Any] = lambda v: v
) -> None:
    """The change log as a history relation (aggregations/offline.py's columns), one row per delivery; the
    amounts as ``stored`` gives them, in a column of type ``amount``."""
    con.execute(
        "CREATE OR REPLACE TABLE history (_row BIGINT, _key VARCHAR, _event_time TIMESTAMPTZ, _committed TIMESTAMPTZ, "
        f"_deleted BOOLEAN, _version BIGINT, _minor BIGINT, amount {amount}, status VARCHAR, product_id BIGINT)"
    )
    con.executemany(
        "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            # A delete's history row may carry its old image (key, time): it must never count anyway.
            (c.row[0], "a" if c.deleted else c.key, c.event_time or T0, c.committed, c.deleted, c.version[0], c.version[1],
             stored(dict(c.values).get("amount")), *(dict(c.values).get(n) for n in ("status", "product_id")))
            for c in log
        ],
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(change_spec, min_size=1, max_size=20),
    gaps=st.lists(st.integers(0, 900), min_size=20, max_size=20),
    redeliver=st.lists(st.integers(0, 19), max_size=6),
    picks=st.lists(st.integers(0, 10_000), min_size=30, max_size=30),
)
def test_the_offline_values_equal_the_oracle_at_label_times(
    specs: list[tuple[Any, ...]], gaps: list[int], redeliver: list[int], picks: list[int]
) -> None:
    import duckdb

    log = build_log(specs, gaps)
    deliveries = log + [log[i] for i in redeliver if i < len(log)]  # the history may hold a change twice
    edges = (
        read_times(log, T0 - timedelta(hours=1))
        + [c.committed for c in log]
        + [c.committed - US for c in log]
    )
    labels = [(key, edges[p % len(edges)]) for p in picks for key in ("a",)] + [
        (key, edges[p % len(edges)]) for p in picks[:10] for key in ("b", "c")
    ]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    history_table(con, deliveries)
    got = values_at(con, "history", labels, AGGS)
    for (key, at), values in zip(labels, got, strict=True):
        for agg in AGGS:
            assert values[agg.name] == oracle(log, key, at, agg), (agg.text, key, at)


@settings(max_examples=40, deadline=None)
@given(
    specs=st.lists(change_spec, min_size=1, max_size=20),
    gaps=st.lists(st.integers(0, 900), min_size=20, max_size=20),
    picks=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=20, max_size=20),
)
def test_a_label_with_a_commit_cut_equals_the_oracle_over_the_changes_committed_by_then(
    specs: list[tuple[Any, ...]], gaps: list[int], picks: list[tuple[int, int]]
) -> None:
    """(key, T, C): the window ends at T, the changes are those committed by C <= T: what an online store that
    had applied the changes up to C served at T (monitoring/consistency.py explains freshness lag with it)."""
    import duckdb

    log = build_log(specs, gaps)
    edges = sorted(read_times(log, T0 - timedelta(hours=1)) + [c.committed for c in log])
    labels = []
    for p, q in picks:
        cut, at = sorted((edges[p % len(edges)], edges[q % len(edges)]))
        labels += [(key, at, cut) for key in ("a", "b")]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    history_table(con, log)
    got = values_at(con, "history", labels, AGGS)
    for (key, at, cut), values in zip(labels, got, strict=True):
        applied = [c for c in log if c.committed <= cut]
        for agg in AGGS:
            assert values[agg.name] == oracle(applied, key, at, agg), (agg.text, key, at, cut)


# Doubles of any magnitude (as a float8 column sends them), and numerics of a scale DECIMAL(38, 10) rounds.
wide_amount = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=14, min_value=-(10**6), max_value=10**6).map(
        lambda d: format(d, "f")  # Debezium's text of a numeric
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(change_spec, min_size=1, max_size=12),
    amounts=st.lists(wide_amount, min_size=12, max_size=12),
    gaps=st.lists(st.integers(0, 900), min_size=12, max_size=12),
    picks=st.lists(st.integers(0, 10_000), min_size=20, max_size=20),
)
def test_offline_values_of_doubles_and_long_decimals_equal_the_online_ones_exactly(
    specs: list[tuple[Any, ...]], amounts: list[Any], gaps: list[int], picks: list[int]
) -> None:
    """The history keeps a double as its JSON text (1e-221, 1e+300) and a numeric as Debezium's text: a
    training set's sum, avg, min, max and numeric filter over them equal the served values (Float64 out),
    where DECIMAL(38, 10) would round 1e-221 to 0 and lose 1e300 (seen in the type matrix: max 0.0 offline
    for 1.5e-221 served)."""
    import duckdb

    from aggregations.rows import history_text, outward, typed

    specs = [(*spec[:4], amount, *spec[5:]) for spec, amount in zip(specs, amounts, strict=False)]
    raw_log = build_log(specs, gaps)
    aggs = [replace(a, dtype=Float64) if a.function in ("min", "max") else a for a in AGGS]
    # The oracle holds what the processor decodes (a double: its exact decimal), as the online state does.
    log = [
        replace(c, values=tuple((n, typed(AGGS[1], v) if n == "amount" else v) for n, v in c.values))
        for c in raw_log
    ]
    edges = [c.committed for c in log] + [e + agg.window for e in (c.event_time for c in log if c.event_time)
                                           for agg in aggs]  # fmt: skip
    labels = [(key, edges[p % len(edges)]) for p in picks for key in ("a", "b")]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    history_table(con, raw_log, amount="VARCHAR", stored=history_text)
    got = values_at(con, "history", labels, aggs)
    for (key, at), values in zip(labels, got, strict=True):
        for agg in aggs:
            assert outward(values[agg.name]) == outward(oracle(log, key, at, agg)), (agg.text, key, at)


def test_an_aggregation_view_without_a_working_suite_is_refused_with_the_tag_to_add() -> None:
    """Its rows must pass a row view's suite (aggregation.suite): without one, or naming a view that is not a
    working row view of its table, the view is broken (feast-apply lists it; the processor dead-letters)."""
    from feast import Entity

    from streams.routes import routes_for

    field = Field(name="orders_24h", dtype=Int64, tags={"aggregation": "count() over 24h"})
    order = Entity(name="order", join_keys=["order_id"])
    rows = FeatureView(
        name="order_status", entities=[order], schema=[Field(name="order_id", dtype=Int64)],
        tags={"cdc.table": "public.orders", "cdc.key": "order_id=id"},
    )  # fmt: skip
    for tags, problem in (
        (TAGS, "declares no suite its source rows must pass"),
        (
            {**TAGS, "aggregation.suite": "customer_profile"},
            "names 'customer_profile', which is not a working row",
        ),
    ):
        (route,) = [r for r in routes_for([view_with([field], **tags), rows])["public.orders"] if r.aggregation is None and r.view == "customer_orders"]  # fmt: skip
        assert route.error is not None and problem in route.error
        assert 'fix: add the tag "aggregation.suite": "order_status"' in route.error
    (ok,) = [r for r in routes_for([view_with([field], **TAGS, **{"aggregation.suite": "order_status"}), rows])["public.orders"] if r.view == "customer_orders"]  # fmt: skip
    assert ok.error is None and ok.aggregation is not None and ok.aggregation.suite_view == "order_status"
