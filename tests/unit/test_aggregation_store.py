"""Aggregation views through the real path: Debezium change events of public.orders -> the pipeline -> the
SQLite online store's contributions -> Feast's read (the plugin's ``online_read``), equal to the brute-force
oracle (aggregations/semantics.py) at every window edge, under inserts, updates, deletes, key moves,
backdated and future event times, duplicate and replayed deliveries, in random batches."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregations.rows import outward
from aggregations.semantics import Change, oracle
from aggregations.spec import aggregation_view
from stores import contributions
from stores.history.reader import history_path
from stores.history.sink import HistorySink
from stores.registry import open_online_sink
from streams.pipeline import Pipeline
from streams.routes import load_routes
from tests.unit.fakes import MemoryDeadLetters, Msg, NullSink
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator

US = timedelta(microseconds=1)
VIEW = "customer_orders"  # feature_repo/orders.py: 24h, 7d and 30d windows


def order_event(offset: int, change: Change, t0: datetime, product: int = 1) -> Msg:
    """``change`` as Debezium writes it (decimals as text, timestamps as ISO strings)."""
    (row,) = change.row
    values = dict(change.values)
    after = (
        None
        if change.deleted
        else {
            "id": row,
            "customer_id": change.key,
            "product_id": values.get("product_id", product),
            "quantity": 1,
            "amount": None if values.get("amount") is None else str(values["amount"]),
            "status": values.get("status"),
            "ordered_at": change.event_time.isoformat().replace("+00:00", "Z") if change.event_time else None,
            "updated_at": change.committed.isoformat().replace("+00:00", "Z"),
        }
    )
    us = int((change.committed - datetime(1970, 1, 1, tzinfo=UTC)) / US)
    value = {
        "op": "d" if change.deleted else "u",
        "before": {"id": row} if change.deleted else None,
        "after": after,
        "source": {"schema": "public", "table": "orders", "ts_ms": us // 1000, "ts_us": us,
                   "lsn": change.version[0], "sequence": json.dumps([str(change.version[0] - 1), str(change.version[0])])},
    }  # fmt: skip
    return Msg("shop.public.orders", 0, offset, json.dumps({"id": row}).encode(), json.dumps(value).encode())


# What the suite of order_status (validation/suites/order_status.json, customer_orders' aggregation.suite) asks of
# an order, modelled by hand: a change it rejects is, for every aggregate, the row's removal.
STATUSES = {"placed", "paid", "shipped", "delivered", "cancelled", "returned"}


def passes_suite(change: Change) -> bool:
    values = dict(change.values)
    amount, status = values.get("amount"), values.get("status")
    return amount is not None and 0 <= amount <= 1_000_000 and status in STATUSES and change.key is not None


def as_validated(log: list[Change]) -> list[Change]:
    """The change log the aggregates must equal: a rejected change removes its row (retraction)."""
    return [c if c.deleted or passes_suite(c) else Change(c.row, c.version, c.committed, True) for c in log]


def key_of(customer: int) -> EntityKey:
    return EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=customer)])


def read(store: FeatureStore, sink: Any, customers: list[int], at: datetime) -> list[dict[str, Any]]:
    """What the Feast plugin's online_read answers at ``at`` (the same function, on the sink's connection),
    decoded as get_online_features does."""
    view = store.get_feature_view(VIEW)
    spec = aggregation_view(view)
    assert spec is not None
    if hasattr(sink, "connection"):  # Postgres

        def execute(query: str, params: list[Any]) -> list[Any]:
            with sink.connection.transaction(), sink.connection.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall()  # type: ignore[no-any-return]

        mark = "%s"
    else:
        execute, mark = (lambda q, p: sink._conn.execute(q, p).fetchall()), "?"
    answer = contributions.online_read(execute, mark, view, spec, [key_of(c) for c in customers], None, at)
    return [
        {name: feast_value_type_to_python_type(v) for name, v in features.items()}
        for _, features in answer
        if features is not None
    ]


@pytest.fixture(scope="module")
def validator() -> BatchValidator:
    return BatchValidator(SuiteStore(SUITES_DIR))


@pytest.fixture(params=["sqlite", "postgres"])
def agg_store(request: pytest.FixtureRequest) -> FeatureStore:
    """Each online store whose Feast reader computes aggregation views, emptied."""
    store: FeatureStore = request.getfixturevalue(f"{request.param}_store")
    return store


# One change: which order, deleted or not, its customer, event time (hours from now, backdated far past the
# longest window or ahead of its commit), amount (cents, or NULL), status.
change_spec = st.tuples(
    st.integers(1, 5),
    st.booleans(),
    st.sampled_from([1, 2, 3]),
    st.one_of(st.integers(-800, 200), st.integers(-2000, -700)),  # also past every window (30 d)
    st.one_of(st.none(), st.integers(-10_000, 10_000)),
    st.sampled_from(["placed", "paid", "shipped", None]),
    st.integers(1, 3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(change_spec, min_size=1, max_size=20),
    gaps=st.lists(st.integers(0, 3600), min_size=20, max_size=20),
    redeliver=st.lists(st.integers(0, 19), max_size=8),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=10),
)
# An order moved back past every window: its earlier, recent contribution must go (none is stored for it).
@example(specs=[(1, False, 1, -1, 100, "paid", 1), (1, False, 1, -1000, 100, "paid", 1)], gaps=[0] * 20,
         redeliver=[], cuts=[1])  # fmt: skip
# A valid order updated to fail its suite (a negative amount, then an unknown status) leaves every aggregate,
# and returns when it is valid again; a redelivered invalid change retracts nothing more.
@example(specs=[(1, False, 1, -1, 500, "paid", 1), (2, False, 1, -2, 700, "paid", 2),
                (1, False, 1, -1, -99_999_900, "bogus!!", 1), (1, False, 1, -1, 300, "paid", 3),
                (2, False, 1, -2, 700, None, 2)],
         gaps=[0] * 20, redeliver=[2, 4], cuts=[1, 2])  # fmt: skip
def test_online_values_equal_the_oracle_at_every_window_edge(
    agg_store: FeatureStore,
    validator: BatchValidator,
    specs: list[tuple[Any, ...]],
    gaps: list[int],
    redeliver: list[int],
    cuts: list[int],
) -> None:
    from decimal import Decimal

    store = agg_store
    sink = open_online_sink(store)
    sink.reset()
    t0 = datetime.now(UTC).replace(microsecond=0)
    log, committed = [], t0
    for i, ((row, deleted, customer, hours, cents, status, product), gap) in enumerate(
        zip(specs, gaps, strict=False)
    ):
        committed += timedelta(seconds=gap)
        values = (("amount", None if cents is None else Decimal(cents) / 100), ("status", status),
                  ("product_id", product))  # fmt: skip
        log.append(
            Change((row,), (1000 + 10 * i, 0), committed, deleted, None if deleted else customer,
                   None if deleted else t0 + timedelta(hours=hours), () if deleted else values)
        )  # fmt: skip
    deliveries = list(log) + [log[i] for i in redeliver if i < len(log)]
    messages = [order_event(n, c, t0) for n, c in enumerate(deliveries)]
    letters = MemoryDeadLetters()
    history = history_path(store, store.get_feature_view(VIEW))
    shutil.rmtree(history, ignore_errors=True)
    pipe = Pipeline(sink, HistorySink(store), letters, validator, routes=load_routes(store))
    start, turn = 0, 0
    while start < len(messages):  # random batches: several changes of one order in one, and across batches
        size = cuts[turn % len(cuts)]
        pipe.process(messages[start : start + size])
        pipe.flush()
        start, turn = start + size, turn + 1
    # Every delivery of a change the suite rejects is a dead letter of the aggregation view, naming why.
    rejected = [m for m, c in zip(messages, deliveries, strict=True) if not c.deleted and not passes_suite(c)]
    mine = [(msg, reason) for msg, reason, _, view, _ in letters.flushed + letters.pending if view == VIEW]
    assert sorted(m.offset() for m, _ in mine) == [m.offset() for m in rejected]
    assert all(r.startswith("rejected by the suite of order_status (aggregation.suite): ") for _, r in mine)
    log = as_validated(log)
    # The online store answers for now and later (what it holds is the latest state).
    floor = max(log[-1].committed, datetime.now(UTC))
    view = aggregation_view(store.get_feature_view(VIEW))
    assert view is not None
    times = {floor}
    for c in log:
        if c.event_time is not None:
            for agg in view.aggregations:
                for t in (c.event_time, c.event_time + agg.window):
                    times.update((t - US, t, t + US))
    for at in sorted(t for t in times if t >= floor):
        got = read(store, sink, [1, 2, 3], at)
        for customer, values in zip([1, 2, 3], got, strict=True):
            for agg in view.aggregations:
                expected = outward(oracle(log, customer, at, agg))
                assert values[agg.name] == expected, (agg.text, customer, at)
    # Offline, at any time: every window edge, and just before and at every commit.
    for c in log:
        times.update((c.committed - US, c.committed))
    labels = [(customer, at) for at in sorted(times) for customer in (1, 2, 3)]
    training = store.get_historical_features(
        entity_df=pd.DataFrame(
            {"customer_id": [k for k, _ in labels], "event_timestamp": [t for _, t in labels]}
        ),
        features=[f"{VIEW}:{agg.name}" for agg in view.aggregations],
    ).to_df()
    for record in training.to_dict("records"):
        at = record["event_timestamp"].to_pydatetime()
        for agg in view.aggregations:
            expected = outward(oracle(log, record["customer_id"], at, agg))
            got_value = record[agg.name]
            got_value = list(got_value) if agg.function == "last" else got_value
            if expected is None:
                assert got_value is None or got_value != got_value, (
                    "offline",
                    agg.text,
                    record,
                )  # None or NaN
            else:
                assert got_value == expected, ("offline", agg.text, record["customer_id"], at)
    sink.close()


def test_get_online_features_serves_values_as_of_the_read(
    agg_store: FeatureStore, validator: BatchValidator
) -> None:
    """Through Feast itself: a customer with orders, one moved away, one deleted, one outside the day."""
    store = agg_store
    sink = open_online_sink(store)
    now = datetime.now(UTC)

    def at(hours: float) -> datetime:
        return now + timedelta(hours=hours)

    log = [
        Change((1,), (1000, 0), now, False, 1, at(-1), (("amount", "10.10"), ("status", "paid"), ("product_id", 1))),
        Change((2,), (1010, 0), now, False, 1, at(-2), (("amount", "0.20"), ("status", "placed"), ("product_id", 2))),
        Change((3,), (1020, 0), now, False, 1, at(-30), (("amount", "5.00"), ("status", "shipped"), ("product_id", 2))),
        Change((4,), (1030, 0), now, False, 1, at(-3), (("amount", "99"), ("status", "paid"), ("product_id", 3))),
        Change((4,), (1040, 0), now, False, 2, at(-3), (("amount", "99"), ("status", "paid"), ("product_id", 3))),
        Change((2,), (1050, 0), now, True),
    ]  # fmt: skip
    shutil.rmtree(history_path(store, store.get_feature_view(VIEW)), ignore_errors=True)
    pipe = Pipeline(sink, HistorySink(store), MemoryDeadLetters(), validator, routes=load_routes(store))
    pipe.process([order_event(n, c, now) for n, c in enumerate(log)])
    pipe.flush()
    got = store.get_online_features(
        features=[
            f"{VIEW}:{name}"
            for name in ("orders_24h", "spent_7d", "largest_order_30d", "products_30d", "last_statuses")
        ],
        entity_rows=[{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 9}],
    ).to_dict()
    assert got["orders_24h"] == [1, 1, 0]  # order 3 is 30 h old, 2 deleted, 4 moved to customer 2
    assert got["spent_7d"] == [15.1, 99.0, None]
    assert got["largest_order_30d"] == [10.1, 99.0, None]
    assert got["products_30d"] == [2, 1, 0]
    assert got["last_statuses"] == [["paid", "shipped"], ["paid"], []]
    # A training set at the same instant, with a row view's feature beside it, and one before any order.
    labels = pd.DataFrame(
        {
            "customer_id": [1, 2, 9, 1],
            "order_id": [1, 4, 2, 1],
            "event_timestamp": [now + US] * 3 + [now - US],
        }
    )
    training = store.get_historical_features(
        entity_df=labels,
        features=[f"{VIEW}:orders_24h", f"{VIEW}:spent_7d", f"{VIEW}:last_statuses", "order_status:status"],
    ).to_df().sort_values(["event_timestamp", "customer_id"])  # fmt: skip
    assert list(training["orders_24h"]) == [0, 1, 1, 0]
    assert [None if v != v else v for v in training["spent_7d"]] == [None, 15.1, 99.0, None]
    assert [list(v) for v in training["last_statuses"]] == [[], ["paid", "shipped"], ["paid"], []]
    assert list(training["status"].fillna("-")) == ["-", "paid", "paid", "-"]  # the row view, Feast's join
    sink.close()


def test_a_value_of_the_wrong_type_is_a_dead_letter_and_the_rest_flows(
    sqlite_store: FeatureStore, validator: BatchValidator
) -> None:
    store = sqlite_store
    sink, dead = open_online_sink(store), MemoryDeadLetters()
    now = datetime.now(UTC)
    good = Change(
        (1,), (1000, 0), now, False, 1, now, (("amount", "3.50"), ("status", "paid"), ("product_id", 1))
    )
    bad = Change(
        (2,), (1010, 0), now, False, 1, now, (("amount", "lots"), ("status", "paid"), ("product_id", 1))
    )
    pipe = Pipeline(sink, NullSink(), dead, validator, routes=load_routes(store))
    pipe.process([order_event(0, good, now), order_event(1, bad, now)])
    pipe.flush()
    reasons = [(reason, view) for _, reason, _, view, _ in dead.flushed if view == VIEW]
    assert len(reasons) == 1 and "column amount holds 'lots'" in reasons[0][0] and "fix:" in reasons[0][0]
    got = store.get_online_features(
        features=[f"{VIEW}:orders_24h", f"{VIEW}:spent_7d"], entity_rows=[{"customer_id": 1}]
    )
    assert got.to_dict()["orders_24h"] == [1] and got.to_dict()["spent_7d"] == [3.5]
    sink.close()


def test_a_store_that_does_not_compute_aggregations_dead_letters_them_with_the_reason(
    validator: BatchValidator, sqlite_store: FeatureStore
) -> None:
    from tests.unit.fakes import MemorySink

    dead = MemoryDeadLetters()
    pipe = Pipeline(MemorySink(), NullSink(), dead, validator, routes=load_routes(sqlite_store))
    now = datetime.now(UTC)
    pipe.process([order_event(0, Change((1,), (1000, 0), now, False, 1, now, (("amount", "1"),)), now)])
    pipe.flush()
    reasons = [reason for _, reason, _, view, _ in dead.flushed if view == VIEW]
    assert reasons and "does not compute" in reasons[0] and "fix:" in reasons[0]


def test_a_rebalance_leaves_the_values_exact(agg_store: FeatureStore, validator: BatchValidator) -> None:
    """Processor A read a batch, stalled; B claimed the partition and wrote the same orders and later changes:
    A's flush is refused whole (its contributions included), and what B wrote stands."""
    from core.errors import FencedError

    store = agg_store
    a, b = open_online_sink(store), open_online_sink(store)
    a.reset()
    now = datetime.now(UTC)
    a.hold(a.claim([("shop.public.orders", 0)], "processor A"))
    stale = Pipeline(a, NullSink(), MemoryDeadLetters(), validator, routes=load_routes(store))
    owner = Pipeline(b, NullSink(), MemoryDeadLetters(), validator, routes=load_routes(store))
    b.hold(b.claim([("shop.public.orders", 0)], "processor B"))
    log = [
        Change((1,), (1000, 0), now, False, 1, now, (("amount", "5.00"), ("status", "paid"), ("product_id", 1))),
        Change((1,), (1010, 0), now, False, 2, now, (("amount", "5.00"), ("status", "paid"), ("product_id", 1))),
    ]  # fmt: skip
    stale.process([order_event(0, log[0], now)])
    owner.process([order_event(n, c, now) for n, c in enumerate(log)])  # re-read, then the move
    owner.flush()
    with pytest.raises(FencedError):
        stale.flush()  # A wakes up: refused, nothing written
    stale.discard()
    got = store.get_online_features(
        features=[f"{VIEW}:orders_24h"], entity_rows=[{"customer_id": 1}, {"customer_id": 2}]
    ).to_dict()
    assert got["orders_24h"] == [0, 1]
    a.close()
    b.close()
