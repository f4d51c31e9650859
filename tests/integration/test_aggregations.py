"""Aggregation features end to end (feature_repo/orders.py `customer_orders`): orders inserted, updated, moved
between customers and deleted in Postgres; the values served over HTTP and a training set equal SQL computed
in Postgres at the same instants; a window sliding past an order with no new change; kill -9 of the processor
in the middle of a workload."""

from __future__ import annotations

import os
import random
import signal
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import psycopg
import pytest
import requests

from tests.integration.conftest import StackHandle
from tests.integration.helpers import wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor import insert_customer
from tests.integration.test_serving import start_server, stop_server

VIEW = "customer_orders"
NAMES = [
    "orders_24h", "spent_7d", "avg_order_7d", "largest_order_30d", "products_30d", "last_statuses", "paid_orders_7d",
]  # fmt: skip

# What each feature is, in SQL over the orders as Postgres holds them at %(at)s (docs/aggregations.md).
SQL = """
SELECT c.id,
    count(o.id) FILTER (WHERE o.ordered_at > %(at)s - interval '24 hours' AND o.ordered_at <= %(at)s),
    sum(o.amount) FILTER (WHERE o.ordered_at > %(at)s - interval '7 days' AND o.ordered_at <= %(at)s),
    avg(o.amount) FILTER (WHERE o.ordered_at > %(at)s - interval '7 days' AND o.ordered_at <= %(at)s),
    max(o.amount) FILTER (WHERE o.ordered_at > %(at)s - interval '30 days' AND o.ordered_at <= %(at)s),
    count(DISTINCT o.product_id) FILTER (WHERE o.ordered_at > %(at)s - interval '30 days' AND o.ordered_at <= %(at)s),
    (array_agg(o.status ORDER BY o.ordered_at DESC) FILTER (
        WHERE o.ordered_at > %(at)s - interval '30 days' AND o.ordered_at <= %(at)s AND o.status IS NOT NULL))[1:5],
    count(o.id) FILTER (WHERE o.ordered_at > %(at)s - interval '7 days' AND o.ordered_at <= %(at)s AND o.status = 'paid')
FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
WHERE c.id = ANY(%(ids)s) GROUP BY c.id ORDER BY c.id
"""


def in_sql(conn: psycopg.Connection[Any], ids: list[int], at: datetime) -> list[list[Any]]:
    out = []
    for _, count, total, avg, top, distinct, statuses, paid in conn.execute(SQL, {"at": at, "ids": ids}):
        out.append([
            count, None if total is None else float(total), None if avg is None else float(avg),
            None if top is None else float(top), distinct, list(statuses or []), paid,
        ])  # fmt: skip
    return out


def served(url: str, ids: list[int]) -> tuple[datetime, list[list[Any]]]:
    """The values over HTTP (Feast's feature server), and the instant they were computed at."""
    r = requests.post(
        f"{url}/get-online-features",
        json={"features": [f"{VIEW}:{n}" for n in NAMES], "entities": {"customer_id": sorted(ids)}},
        timeout=10,
    )
    r.raise_for_status()
    body = r.json()
    by_name = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
    stamps = {t for n in NAMES for t in by_name[n]["event_timestamps"]}
    assert len(stamps) == 1, stamps  # one read instant for every value of the request
    at = datetime.fromisoformat(stamps.pop().replace("Z", "+00:00"))
    rows = [[by_name[n]["values"][i] for n in NAMES] for i in range(len(ids))]
    return at, rows


def same(got: list[list[Any]], want: list[list[Any]]) -> bool:
    """Equal values, the average to the last double (Postgres divides numerics to 16 digits)."""
    for g, w in zip(got, want, strict=True):
        for name, a, b in zip(NAMES, g, w, strict=True):
            if name == "avg_order_7d" and a is not None and b is not None:
                if a != pytest.approx(b, rel=1e-12):
                    return False
            elif (a or None) != (b or None) if name == "last_statuses" else a != b:
                return False
    return True


def training(platform: Platform, ids: list[int], instants: list[datetime]) -> list[list[list[Any]]]:
    labels = pd.DataFrame(
        {
            "customer_id": [i for _ in instants for i in sorted(ids)],
            "event_timestamp": [t for t in instants for _ in ids],
        }
    )
    frame = (
        platform.store()
        .get_historical_features(entity_df=labels, features=[f"{VIEW}:{n}" for n in NAMES])
        .to_df()
    )
    frame = frame.sort_values(["event_timestamp", "customer_id"])
    out: list[list[list[Any]]] = []
    for n, record in enumerate(frame.to_dict("records")):
        if n % len(ids) == 0:
            out.append([])
        row = []
        for name in NAMES:
            value = record[name]
            if name == "last_statuses":
                value = list(value)
            elif value is not None and value != value:  # NaN: no value
                value = None
            row.append(value)
        out[-1].append(row)
    return out


def order(
    conn: psycopg.Connection[Any], customer: int, product: int, amount: str, ago: timedelta, status: str
) -> int:
    row = conn.execute(
        "INSERT INTO orders (customer_id, product_id, quantity, amount, status, ordered_at) "
        "VALUES (%s, %s, 1, %s, %s, now() - %s) RETURNING id",
        (customer, product, Decimal(amount), status, ago),
    ).fetchone()
    assert row
    return int(row[0])


def test_aggregations_equal_sql_in_postgres_online_offline_as_time_passes_and_after_kill_9(
    stack: StackHandle, platform: Platform, request: pytest.FixtureRequest
) -> None:
    platform.start_processor()
    server, url = start_server(platform)
    request.addfinalizer(lambda: stop_server(server))
    topic = platform.topic("public.orders")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        products = [
            int(conn.execute(
                "INSERT INTO products (sku, name, description, category, price) VALUES (%s, 'p', 'p', 'agg', 1) "
                "RETURNING id", (uuid.uuid4().hex,),
            ).fetchone()[0])  # type: ignore[index]
            for _ in range(3)
        ]  # fmt: skip
        ids = [insert_customer(conn) for _ in range(3)]
        a, b, c = ids

        def clean_up() -> (
            None
        ):  # the products would reach later tests' snapshots (test_embeddings counts them)
            with psycopg.connect(stack.app, autocommit=True) as done:
                done.execute("DELETE FROM orders WHERE customer_id = ANY(%s)", (ids,))
                done.execute("DELETE FROM products WHERE id = ANY(%s)", (products,))

        request.addfinalizer(clean_up)
        # A customer's orders across the windows; one about to leave the 24 h window with no change.
        o1 = order(conn, a, products[0], "10.10", timedelta(hours=1), "placed")
        o2 = order(conn, a, products[1], "0.20", timedelta(hours=30), "paid")
        o3 = order(conn, a, products[1], "99.99", timedelta(days=10), "shipped")
        sliding = order(conn, b, products[2], "5.00", timedelta(hours=24) - timedelta(seconds=40), "placed")
        o5 = order(conn, b, products[0], "1.00", timedelta(minutes=5), "placed")
        # Updates: an amount, a status, a move to another customer, a move in time, a delete.
        conn.execute("UPDATE orders SET amount = 12.34, status = 'paid' WHERE id = %s", (o1,))
        conn.execute("UPDATE orders SET customer_id = %s WHERE id = %s", (c, o2))
        conn.execute("UPDATE orders SET ordered_at = now() - interval '40 days' WHERE id = %s", (o3,))
        conn.execute("DELETE FROM orders WHERE id = %s", (o5,))

        def agrees() -> datetime | None:
            at, got = served(url, ids)
            return at if same(got, in_sql(conn, ids, at)) else None

        wait_until(lambda: platform.caught_up([topic]) and agrees(), 90, "the orders' aggregates over HTTP")
        instants = [agrees()]
        assert served(url, ids)[1][1][0] == 1  # b: the sliding order still counted

        # No new change: the 24 h window slides past the order; every read on the way equals SQL at its instant.
        def slid() -> datetime | None:
            at, got = served(url, ids)
            assert same(got, in_sql(conn, ids, at)), (at, got, in_sql(conn, ids, at))
            return at if got[1][0] == 0 else None

        instants.append(wait_until(slid, 90, "the 24 h window to slide past an order"))

        # A training set at those instants equals what was served (and SQL) then.
        offline = training(platform, ids, [t for t in instants if t is not None])
        for at, values in zip(instants, offline, strict=True):
            assert at is not None and same(values, in_sql(conn, ids, at)), (at, values)

        # kill -9 in the middle of a workload of inserts, updates, moves and deletes.
        rng = random.Random(7)
        live = [o1, o2, o3, sliding]
        first = platform.processes[-1]
        for step in range(400):
            kind = rng.random()
            if kind < 0.4 or not live:
                live.append(order(conn, rng.choice(ids), rng.choice(products), f"{rng.randint(1, 9999) / 100:.2f}",
                                  timedelta(minutes=rng.randint(0, 60 * 24 * 35)), rng.choice(["placed", "paid"])))  # fmt: skip
            elif kind < 0.6:
                conn.execute(
                    "UPDATE orders SET customer_id = %s WHERE id = %s", (rng.choice(ids), rng.choice(live))
                )
            elif kind < 0.8:
                conn.execute(
                    "UPDATE orders SET amount = %s, status = %s WHERE id = %s",
                    (
                        Decimal(rng.randint(1, 9999)) / 100,
                        rng.choice(["paid", "shipped", "returned"]),
                        rng.choice(live),
                    ),
                )
            else:
                conn.execute("DELETE FROM orders WHERE id = %s", (live.pop(rng.randrange(len(live))),))
            if step == 150:
                os.kill(first.pid, signal.SIGKILL)  # mid-batch: no flush, no commit
                assert first.wait(10) == -signal.SIGKILL
            if step == 250:
                platform.start_processor("restarted")
        wait_until(lambda: platform.caught_up([topic]) and agrees(), 120, "the aggregates after kill -9")
        at = agrees()
        assert at is not None
        (values,) = training(platform, ids, [at])
        assert same(values, in_sql(conn, ids, at)), (at, values)
    assert not [d for d in platform.dead_letters() if d.feature_view == VIEW]
    assert "Traceback" not in platform.log("restarted")
