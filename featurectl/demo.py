"""The main job: the whole path from a Postgres row change to the event a consumer reads.

Stack up, connector deployed, a few demo rows inserted, updated and deleted through the app role,
and the resulting change events printed as a consumer sees them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import psycopg

from connectors.definition import load_definition
from connectors.deploy import deploy
from featurectl.errors import FeatureCtlError
from featurectl.settings import Settings
from stack.launcher import LocalStack
from stack.postgres import Postgres
from streams.events import ChangeEvent
from streams.tail import render, tail

logger = logging.getLogger(__name__)


def run_workload(conninfo: str, tag: str) -> dict[str, list[int]]:
    """Insert, update and delete a few rows; returns the ids touched per table."""
    with psycopg.connect(conninfo) as conn:
        cust = conn.execute(
            "INSERT INTO customers (email, full_name, country, segment, credit_limit, birth_date) "
            "VALUES (%s, 'Ada Demo', 'GB', 'standard', 500.00, '1990-05-17') RETURNING id",
            (f"ada-{tag}@example.com",),
        ).fetchone()
        prod = conn.execute(
            "INSERT INTO products (sku, name, description, category, price, tags, attributes) "
            "VALUES (%s, 'Trail shoe', 'Lightweight trail running shoe with a grippy sole', 'shoes', 89.90, "
            "ARRAY['running','trail'], '{\"weight_g\": 280}') RETURNING id",
            (f"SKU-{tag}",),
        ).fetchone()
        assert cust and prod
        conn.commit()
        order = conn.execute(
            "INSERT INTO orders (customer_id, product_id, quantity, amount) VALUES (%s, %s, 2, 179.80) RETURNING id",
            (cust[0], prod[0]),
        ).fetchone()
        assert order
        conn.commit()
        conn.execute(
            "UPDATE customers SET segment = 'gold', credit_limit = 2500.00, updated_at = now() WHERE id = %s",
            (cust[0],),
        )
        conn.execute("UPDATE orders SET status = 'shipped', updated_at = now() WHERE id = %s", (order[0],))
        conn.commit()
        conn.execute("DELETE FROM orders WHERE id = %s", (order[0],))
        conn.commit()
    return {"public.customers": [cust[0]], "public.products": [prod[0]], "public.orders": [order[0]]}


def collect(
    bootstrap: str,
    topics: list[str],
    want: Callable[[ChangeEvent], bool],
    count: int,
    timeout_s: float,
) -> list[ChangeEvent]:
    """Read from the start of ``topics`` until ``count`` events pass ``want`` or the deadline passes."""
    found: list[ChangeEvent] = []
    for event in tail(bootstrap, topics, idle_timeout_s=None, timeout_s=timeout_s):
        if want(event):
            found.append(event)
            if len(found) >= count:
                break
    return found


def main(settings: Settings) -> None:
    definition = load_definition()
    stack = LocalStack(settings)
    took = stack.up(definition)
    print(
        f"stack up in {took:.1f}s: postgres 127.0.0.1:{settings.pg_port}, kafka {settings.bootstrap_servers}, "
        f"connect {settings.connect_rest_url}"
    )
    t0 = time.monotonic()
    deploy(settings, definition)
    print(f"connector {definition.name} RUNNING ({time.monotonic() - t0:.1f}s)")

    tag = uuid.uuid4().hex[:8]
    ids = run_workload(Postgres(settings).app_conninfo(), tag)
    print(f"\nworkload {tag}: inserted, updated and deleted rows {ids}\n")

    topics = [definition.topic_for(t) for t in ids]

    def ours(e: ChangeEvent) -> bool:
        table = e.topic.removeprefix(definition.topic_prefix + ".")
        return e.key is not None and e.key.get("id") in ids.get(table, [])

    # customers c,u; products c; orders c,u,d + tombstone
    events = collect(settings.bootstrap_servers, topics, ours, count=7, timeout_s=60)
    print("change events as a consumer reads them:")
    for event in events:
        print(render(event))
    if len(events) < 7:
        raise FeatureCtlError(
            f"only {len(events)} of 7 expected change events arrived within 60s",
            f"check `featurectl stack status` and {settings.data_dir / 'logs'}",
        )
    print(f"\n{len(events)} change events, ops: {' '.join(e.op for e in events)}")
