"""Aggregation views (feature_repo/orders.py `customer_orders`): what they cost the processor, how fresh they
are, what a read costs (values are computed at read time), and how much state a key keeps.

    .venv/bin/python -m bench.aggregation_bench [--orders 100000] [--customers 1000] [--rate 200] [--seconds 10]
        [--requests 300] [--labels 2000] [--online-store sqlite|postgres]

Works on a table of its own shaped like ``orders`` (bench/common.py), with both of the repo's order views
reading it: the row view ``order_status`` and the aggregation view ``customer_orders``. The seeded orders'
event times are spread over the last 60 days, twice the longest window (30 d), so half of them are past every
window. Figures vary between runs on shared machines: compare within one run.
"""

from __future__ import annotations

import argparse
import logging
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from feast import FeatureStore
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, drop_online_store, handled, setup, use_online_store, wait_processed
from core import metrics
from stores.registry import kinds
from stores.repository import feast_apply
from streams.processor import Processor, ProcessorConfig

VIEW = "customer_orders"
FEATURES = [f"{VIEW}:{n}" for n in ("orders_24h", "spent_7d", "avg_order_7d", "largest_order_30d",
                                     "products_30d", "last_statuses", "paid_orders_7d")]  # fmt: skip


def seed(conninfo: str, table: str, orders: int, customers: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (customer_id, product_id, quantity, amount, status, ordered_at) "
                "SELECT 1 + (g * 7919) %% %s, 1 + g %% 50, 1, (g %% 10000) / 100.0, "
                "(ARRAY['placed', 'paid', 'shipped'])[1 + g %% 3], now() - (g::float8 / %s) * interval '60 days' "
                "FROM generate_series(1, %s) g"
            ).format(sql.Identifier(table)),
            (customers, orders, orders),
        )


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def lookups(
    store: FeatureStore, features: list[str], rows: list[dict[str, int]], n: int
) -> tuple[float, float]:
    """p50 / p99 ms of ``n`` get_online_features calls for ``rows``."""
    for _ in range(3):  # warm: the registry's first read, connections
        store.get_online_features(features=features, entity_rows=rows)
    took = []
    for _ in range(n):
        t = time.perf_counter()
        store.get_online_features(features=features, entity_rows=rows).to_dict()
        took.append((time.perf_counter() - t) * 1000)
    return percentiles(took)


def training_set(store: FeatureStore, key: str, keys: int, features: list[str], labels: int) -> float:
    """Seconds to build a training set of ``labels`` random keys at random times of the last 30 days."""
    import random

    import pandas as pd

    rnd = random.Random(7)
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame(
        {
            key: [rnd.randint(1, keys) for _ in range(labels)],
            "event_timestamp": [
                now - pd.Timedelta(seconds=rnd.randint(0, 30 * 86400)) for _ in range(labels)
            ],
        }
    )
    start = time.perf_counter()
    table = store.get_historical_features(entity_df=frame, features=features).to_arrow()
    assert table.num_rows == labels
    return time.perf_counter() - start


def state(store: FeatureStore, conninfo: str, table: str) -> tuple[int, int, int, int]:
    """(contributions stored, orders within the longest window, most stored for one key, most in window for one)."""
    from stores.contributions import TABLE

    window = "now() - interval '30 days'"
    with psycopg.connect(conninfo) as conn:
        in_window, top_window = conn.execute(
            sql.SQL(
                "SELECT coalesce(sum(n), 0), coalesce(max(n), 0) FROM (SELECT count(*) n FROM {} "
                f"WHERE ordered_at > {window} GROUP BY customer_id) t"
            ).format(sql.Identifier(table))
        ).fetchone()  # type: ignore[misc]
    query = (
        f"SELECT coalesce(sum(n), 0), coalesce(max(n), 0) FROM (SELECT count(*) n FROM {TABLE} "
        f"WHERE view = '{VIEW}' GROUP BY agg_key) t"
    )
    if store.config.online_store.type.startswith("stores.sqlite"):
        from stores.sqlite.db import connect

        db = connect(Path(str(store.config.repo_path)) / str(store.config.online_store.path))
        stored, top = db.execute(query).fetchone()
        db.close()
    else:
        from feast.infra.utils.postgres.connection_utils import _get_conn

        with _get_conn(store.config.online_store) as pg:
            stored, top = pg.execute(query).fetchone()  # type: ignore[misc]
    return int(stored), int(in_window), int(top), int(top_window)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=100_000, help="orders seeded (read by the catch-up)")
    ap.add_argument("--customers", type=int, default=1000, help="customers they are spread over")
    ap.add_argument("--rate", type=int, default=200, help="new orders per second in the freshness run")
    ap.add_argument("--seconds", type=int, default=10, help="length of the freshness run")
    ap.add_argument("--requests", type=int, default=300, help="lookups per case")
    ap.add_argument("--labels", type=int, default=2000, help="labels of the training sets")
    ap.add_argument("--online-store", choices=[k.name for k in kinds() if k.aggregating], default="sqlite")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="featurectl-bench-"))
    name = f"bench_{uuid.uuid4().hex[:6]}"
    settings, pg, definition = setup(root, name, "orders", "orders.py", '"cdc.table": "public.orders"')
    views = settings.feature_repo / "orders.py"
    views.write_text(
        views.read_text().replace(
            '"aggregation.table": "public.orders"', f'"aggregation.table": "public.{name}"'
        )
    )
    use_online_store(settings, args.online_store, name)
    app = pg.app_conninfo()
    try:
        from connectors.deploy import deploy

        deploy(settings, definition)
        feast_apply(settings.feature_repo)
        store = FeatureStore(repo_path=str(settings.feature_repo))
        seed(app, name, args.orders, args.customers)
        processor = Processor(
            settings, store, ProcessorConfig.from_settings(settings, definition.topic_prefix)
        )
        stop = threading.Event()
        worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
        worker.start()

        # 1. Catch-up: every seeded order, into the row view and the aggregation view.
        rows = 2 * args.orders  # one row per view per order
        wait_processed(processor, 1)
        first = handled(processor)
        write_before = metrics.STAGE_DURATION.labels("online_write")._sum.get()
        catch_up = wait_processed(processor, rows)
        catchup_rate = (handled(processor) - first) / catch_up
        online_write = metrics.STAGE_DURATION.labels("online_write")._sum.get() - write_before

        # 2. State: contributions kept against the orders any window can reach (eviction ran in a flush).
        stored, in_window, top, top_window = state(store, app, name)

        # 3. Freshness at a steady rate: new orders for random customers, commit -> online (the contribution
        # is written in the same transaction as the row view's row, so the value is readable from then on).
        processor.pipeline.freshness.samples.clear()
        before = handled(processor)
        with psycopg.connect(app, autocommit=True) as conn:
            start, n = time.monotonic(), 0
            while (now := time.monotonic()) < start + args.seconds:
                due = start + n / args.rate
                if now < due:
                    time.sleep(due - now)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (customer_id, product_id, quantity, amount, status) VALUES (%s, 1, 1, 9.99, 'placed')"
                    ).format(sql.Identifier(name)),
                    (1 + n % args.customers,),
                )
                n += 1
        wait_processed(processor, before + 2 * n)
        p50, p99 = processor.pipeline.freshness.percentile(50), processor.pipeline.freshness.percentile(99)
        stop.set()
        worker.join(30)

        # 4. Reads: the aggregation view (computed now over each key's rows in its windows) beside the row view.
        one, hundred = [{"customer_id": 1}], [{"customer_id": 1 + i} for i in range(min(100, args.customers))]
        orders_one, orders_hundred = [{"order_id": 1}], [{"order_id": 1 + i} for i in range(100)]
        agg1 = lookups(store, FEATURES, one, args.requests)
        agg100 = lookups(store, FEATURES, hundred, max(args.requests // 10, 5))
        row1 = lookups(store, ["order_status:status", "order_status:amount"], orders_one, args.requests)
        row100 = lookups(
            store, ["order_status:status", "order_status:amount"], orders_hundred, max(args.requests // 10, 5)
        )

        # 5. Training sets: labels at random times of the last 30 days, from the view's history, beside the
        # row view's (Feast's point-in-time join over its history) for as many labels.
        agg_train = training_set(store, "customer_id", args.customers, FEATURES, args.labels)
        row_train = training_set(
            store, "order_id", args.orders, ["order_status:status", "order_status:amount"], args.labels
        )

        print("\n== aggregation view benchmark ==")
        print(
            f"command: .venv/bin/python -m bench.aggregation_bench --orders {args.orders} --customers {args.customers} "
            f"--rate {args.rate} --seconds {args.seconds} --requests {args.requests} --labels {args.labels} "
            f"--online-store {args.online_store}"
        )
        print("\n| | figure |")
        print("|---|---:|")
        print(f"| processor catch-up, order_status + customer_orders rows/s | {catchup_rate:,.0f} |")
        print(f"| of which orders/s | {catchup_rate / 2:,.0f} |")
        print(f"| online write share of the catch-up | {online_write / catch_up:.0%} |")
        print(
            f"| freshness at {args.rate} orders/s, commit -> value readable p50 / p99 | {p50:.0f} / {p99:.0f} ms |"
        )
        print(
            f"| contributions stored / orders within 30 d (of {args.orders:,} seeded over 60 d) | {stored:,} / {in_window:,} |"
        )
        print(f"| most for one customer: stored / within 30 d | {top:,} / {top_window:,} |")
        print(
            f"| lookup p50 / p99, 1 customer ({in_window / args.customers:,.0f} orders in 30 d, 7 aggregations) | {agg1[0]:.1f} / {agg1[1]:.1f} ms |"
        )
        print(f"| lookup p50 / p99, 100 customers | {agg100[0]:.1f} / {agg100[1]:.1f} ms |")
        print(f"| anchor: row view lookup p50 / p99, 1 order | {row1[0]:.1f} / {row1[1]:.1f} ms |")
        print(f"| anchor: row view lookup p50 / p99, 100 orders | {row100[0]:.1f} / {row100[1]:.1f} ms |")
        print(f"| training set of {args.labels:,} customer labels, 7 aggregations | {agg_train:.2f} s |")
        print(f"| anchor: training set of {args.labels:,} order labels, row view | {row_train:.2f} s |")
    finally:
        try:
            drop_online_store(settings, args.online_store, name)
        finally:
            cleanup(settings, pg, definition, name, root)


if __name__ == "__main__":
    main()
