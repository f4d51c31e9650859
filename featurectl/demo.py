"""The end-to-end demo (`featurectl demo`, README's first command): the whole path from a Postgres row change
to features a model service reads.

Stack up, connector deployed, `feast apply`, the stream processor running, a demo workload
changing rows (one of them bad), the change events as a consumer sees them, the online features
read back through Feast, what went to the dead-letter topic, a drift check that finds a planted
shift (a burst of updates multiplying credit limits) and names the feature, and, over the lookups a model
service made through it all, proof that what was served is what training reads (featurectl/demo_serving.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.compute as pc

from connectors.definition import load_definition
from connectors.deploy import deploy
from core.errors import FeatureCtlError
from core.settings import Settings
from stack.launcher import LocalStack
from stack.postgres import Postgres
from streams.events import ChangeEvent
from streams.tail import render, tail

logger = logging.getLogger(__name__)


def run_workload(conninfo: str, tag: str) -> dict[str, int]:
    """Insert, update and delete a few rows, one of them breaking the customer suite."""
    with psycopg.connect(conninfo) as conn:

        def one(query: str, params: tuple[Any, ...]) -> int:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return int(row[0])

        ids = {
            "customer": one(
                "INSERT INTO customers (email, full_name, country, segment, credit_limit, birth_date) "
                "VALUES (%s, 'Ada Demo', 'GB', 'standard', 500.00, '1990-05-17') RETURNING id",
                (f"ada-{tag}@example.com",),
            ),
            "product": one(
                "INSERT INTO products (sku, name, description, category, price, tags, attributes) "
                "VALUES (%s, 'Trail shoe', 'Lightweight trail running shoe with a grippy sole', 'shoes', 89.90, "
                "ARRAY['running','trail'], '{\"weight_g\": 280}') RETURNING id",
                (f"SKU-{tag}",),
            ),
            # Two more products, so the similarity lookup has something to tell apart.
            "product_2": one(
                "INSERT INTO products (sku, name, description, category, price) VALUES (%s, 'Espresso maker', "
                "'Stovetop coffee pot that brews strong Italian espresso', 'kitchen', 34.50) RETURNING id",
                (f"SKU-{tag}-2",),
            ),
            "product_3": one(
                "INSERT INTO products (sku, name, description, category, price) VALUES (%s, 'Rain jacket', "
                "'Packable waterproof shell for hiking in wet weather', 'outdoor', 120.00) RETURNING id",
                (f"SKU-{tag}-3",),
            ),
            # credit_limit below zero and an unknown segment: the customer_profile suite rejects it.
            "bad_customer": one(
                "INSERT INTO customers (email, full_name, country, segment, credit_limit) "
                "VALUES (%s, 'Bad Row', 'GB', 'vip!!', -10) RETURNING id",
                (f"bad-{tag}@example.com",),
            ),
        }
        conn.commit()
        ids["order"] = one(
            "INSERT INTO orders (customer_id, product_id, quantity, amount) VALUES (%s, %s, 2, 179.80) "
            "RETURNING id",
            (ids["customer"], ids["product"]),
        )
        conn.commit()
        conn.execute(
            "UPDATE customers SET segment = 'gold', credit_limit = 2500.00, updated_at = now() WHERE id = %s",
            (ids["customer"],),
        )
        conn.execute(
            "UPDATE orders SET status = 'shipped', updated_at = now() WHERE id = %s", (ids["order"],)
        )
        conn.commit()
        conn.execute("DELETE FROM orders WHERE id = %s", (ids["order"],))
        conn.commit()
    return ids


def _key_id(key: bytes | None) -> object:
    try:
        return json.loads(key or b"{}").get("id")
    except (ValueError, AttributeError):
        return None


def collect(
    kafka: dict[str, Any],
    topics: list[str],
    want: Callable[[ChangeEvent], bool],
    count: int,
    timeout_s: float,
) -> list[ChangeEvent]:
    """Read from the start of ``topics`` until ``count`` events pass ``want`` or the deadline passes."""
    found: list[ChangeEvent] = []
    for event in tail(kafka, topics, idle_timeout_s=None, timeout_s=timeout_s):
        if want(event):
            found.append(event)
            if len(found) >= count:
                break
    return found


def wait_online(
    read: Callable[[], dict[str, list[Any]]],
    done: Callable[[dict[str, list[Any]]], bool],
    timeout_s: float,
    progress: Callable[[], str],
) -> tuple[dict[str, list[Any]], float]:
    """Poll the online store until ``done`` holds, saying every few seconds how far the processor got.

    A backlog in the topics (earlier runs, a benchmark) has to be worked through first.
    """
    start = last_report = time.monotonic()
    while True:
        features = read()
        if done(features):
            return features, time.monotonic() - start
        now = time.monotonic()
        if now - start > timeout_s:
            raise FeatureCtlError(
                f"online store did not reach the expected state within {timeout_s:.0f}s: {features}",
                "see the processor's log lines above",
            )
        if now - last_report >= 5:
            print(f"  waiting: {progress()}")
            last_report = now
        time.sleep(0.1)


def over_http(settings: Settings, customer_id: int, product_id: int) -> None:
    """The same features as a model service fetches them: POST /get-online-features to `feast serve`."""
    import json

    import requests

    from serving.feature_server import FeatureServer

    server = FeatureServer(
        settings.feature_repo,
        settings.serve_host,
        settings.serve_port,
        log=settings.data_dir / "logs" / "feature-server.log",
        rt_priority=settings.serving_rt_priority,
    )
    started = not server.healthy()  # a `featurectl serve` already running is used as it is
    if started:
        server.start()
    try:
        body = {
            "features": [
                "customer_profile:segment",
                "customer_profile:credit_limit",
                "product_details:price",
                "customer_orders:orders_24h",
            ],
            "entities": {"customer_id": [customer_id, 10**9], "product_id": [product_id, product_id]},
        }
        t = time.perf_counter()
        response = requests.post(f"{server.url}/get-online-features", json=body, timeout=10)
        took = (time.perf_counter() - t) * 1000
        response.raise_for_status()
        result = response.json()
        print(f"\nHTTP lookup against the Feast feature server ({server.url}, {took:.1f} ms):")
        print(f"  POST /get-online-features {json.dumps(body)}")
        names = result["metadata"]["feature_names"]
        for name, column in zip(names, result["results"], strict=True):
            cells = [f"{v!r} ({s})" for v, s in zip(column["values"], column["statuses"], strict=True)]
            print(f"  {name}: {', '.join(cells)}")
        print("  (customer 1000000000 does not exist: NOT_FOUND, not an error)")
    finally:
        if started:
            server.stop()


def similar(store: Any, product_ids: list[int], processor: Any) -> None:
    """Wait for the products' embeddings, then show a similarity lookup through Feast."""
    from embeddings.search import search

    def read() -> dict[str, list[Any]]:
        return store.get_online_features(  # type: ignore[no-any-return]
            features=["product_documents:embedding"], entity_rows=[{"product_id": p} for p in product_ids]
        ).to_dict()

    _, waited = wait_online(
        read,
        lambda f: all(v is not None for v in f["embedding"]),
        300,
        lambda: f"{processor.processed} rows written",
    )
    query = "shoes for running on mountain paths"
    print(
        f"\nsimilarity lookup via FeatureStore.retrieve_online_documents_v2 (vectors online {waited:.2f}s later):"
    )
    print(f'  query: "{query}"  (model all-MiniLM-L6-v2, cosine distance, nearest first)')
    for hit in search(store, "product_documents", query, k=3):
        print(
            f"  product {hit['product_id']} distance={hit['distance']:.3f}  {hit['name']}: {hit['description']}"
        )


def training_set(store: Any, customer_id: int) -> None:
    """Point-in-time join for labels at the customer's change times (and one before), from its history."""
    import pandas as pd

    from stores.history.reader import History

    history = History(store, store.get_feature_view("customer_profile"))

    def changes() -> list[Any]:
        rows = history.dataset().to_table(filter=pc.field("customer_id") == customer_id).to_pylist()
        return sorted(r["event_timestamp"] for r in rows)

    deadline = time.monotonic() + 60
    while len(times := changes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the history commit lands with the batch that updated the online store
    labels = pd.DataFrame(
        {
            "customer_id": [customer_id] * (len(times) + 1),
            "event_timestamp": [times[0] - timedelta(seconds=1), *times],
        }
    )
    df = store.get_historical_features(
        entity_df=labels, features=["customer_profile:segment", "customer_profile:credit_limit"]
    ).to_df()
    print(
        f"\ntraining set via FeatureStore.get_historical_features (point in time; Delta history "
        f"{history.path.relative_to(Path(str(store.repo_path)))}, joined by DuckDB):"
    )
    for when, label in zip(
        ["before the insert", "at the insert's commit", "at the update's commit"],
        df.sort_values("event_timestamp").itertuples(),
        strict=False,
    ):
        segment = None if pd.isna(label.segment) else label.segment
        limit = None if pd.isna(label.credit_limit) else label.credit_limit
        print(
            f"  customer {customer_id} {when} ({label.event_timestamp:%H:%M:%S.%f}): segment={segment} credit_limit={limit}"
        )


def orders_per_customer(store: Any, conninfo: str, customer_id: int, product_id: int, processor: Any) -> None:
    """An aggregation feature (feature_repo/orders.py `customer_orders`) changing as orders change and as
    time passes: orders in the last 24 h, amount spent in 7 days and the last statuses, per customer."""
    import psycopg

    names = ["orders_24h", "spent_7d", "last_statuses"]

    def read() -> dict[str, list[Any]]:
        return store.get_online_features(  # type: ignore[no-any-return]
            features=[f"customer_orders:{n}" for n in names], entity_rows=[{"customer_id": customer_id}]
        ).to_dict()

    def show(what: str, features: dict[str, list[Any]], waited: float) -> None:
        values = "  ".join(f"{n}={features[n][0]!r}" for n in names)
        print(f"  {what:<44} {values}  ({waited:.2f}s)")

    def progress() -> str:
        return f"{processor.processed} rows written"

    print(
        "\naggregation features via FeatureStore.get_online_features (customer_orders, computed at read time):"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:

        def order(amount: str, ago: str, status: str) -> int:
            row = conn.execute(
                "INSERT INTO orders (customer_id, product_id, quantity, amount, status, ordered_at) "
                "VALUES (%s, %s, 1, %s, %s, now() - %s::interval) RETURNING id",
                (customer_id, product_id, amount, status, ago),
            ).fetchone()
            assert row is not None
            return int(row[0])

        order("25.00", "2 hours", "paid")
        leaving = order("10.00", "23 hours 59 minutes 30 seconds", "placed")  # leaves the 24 h window in 30 s
        old = order("99.90", "3 days", "shipped")
        features, waited = wait_online(read, lambda f: f["orders_24h"][0] == 2, 120, progress)
        show("3 orders inserted (one 3 days old):", features, waited)
        conn.execute("UPDATE orders SET amount = 15.00, status = 'returned' WHERE id = %s", (leaving,))
        features, waited = wait_online(read, lambda f: f["spent_7d"][0] == 139.9, 60, progress)
        show("one order's amount and status updated:", features, waited)
        conn.execute("DELETE FROM orders WHERE id = %s", (old,))
        features, waited = wait_online(read, lambda f: f["spent_7d"][0] == 40.0, 60, progress)
        show("the 3-day-old order deleted:", features, waited)
    features, waited = wait_online(
        read, lambda f: f["orders_24h"][0] == 1, 120, lambda: "no change: the 24 h window slides at read time"
    )
    show("no change, time passes (one order turns 24 h):", features, waited)


def drift_check(settings: Settings, store: Any, conninfo: str, tag: str) -> list[str]:
    """Plant a shift and find it: 300 new customers (part of the reference), then a burst of updates
    multiplying their credit limits by five; `featurectl drift` over the burst's window names the feature."""
    from monitoring.drift.run import run_drift
    from monitoring.drift.samples import read_window

    view = store.get_feature_view("customer_profile")

    def changes_since(since: datetime) -> int:
        return int(read_window(store, view, since, datetime.now(UTC) + timedelta(minutes=1)).num_rows)

    def land(since: datetime, n: int, what: str) -> None:
        deadline = time.monotonic() + 120
        while changes_since(since) < n:
            if time.monotonic() > deadline:
                raise FeatureCtlError(
                    f"{what} did not reach the history in 120s", "see the processor's log above"
                )
            time.sleep(0.2)

    before = datetime.now(UTC)
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO customers (email, full_name, country, segment, credit_limit) "
            "SELECT 'drift-' || %s || '-' || g || '@example.com', 'Drift ' || g, (ARRAY['DE','FR','US'])[g %% 3 + 1], "
            "'silver', round((1000 + 300 * sin(g * 1.7))::numeric, 2) FROM generate_series(1, 300) g",
            (tag,),
        )
    land(before, 300, "the 300 new customers")
    shift = datetime.now(UTC)
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "UPDATE customers SET credit_limit = credit_limit * 5 WHERE email LIKE %s", (f"drift-{tag}-%",)
        )
    land(shift, 300, "the burst of 300 updates")
    end = datetime.now(UTC)
    window = f"{(end - shift).total_seconds():.3f}s"
    print(
        f"\ndrift check (`featurectl drift customer_profile --window {window}`) after a burst of 300 updates "
        "multiplying credit limits by 5:"
    )
    drifting = run_drift(
        settings, store, ["customer_profile"], window, end, False, None, lambda line: print(f"  {line}")
    )
    print(f"  found: {', '.join(drifting) or 'nothing'}")
    return drifting


def main(settings: Settings) -> None:
    from jobs.replay import list_dead_letters
    from stores.reembed import pending_views, reembed
    from stores.repository import feast_apply, open_store
    from streams.processor import Processor, ProcessorConfig

    definition = load_definition()
    took = LocalStack(settings).up(definition)
    print(
        f"stack up in {took:.1f}s: postgres 127.0.0.1:{settings.pg_port}, kafka {settings.bootstrap_servers}, "
        f"connect {settings.connect_rest_url}"
    )
    deploy(settings, definition)
    print(f"connector {definition.name} RUNNING")
    feast_apply(settings.feature_repo)
    store = open_store(settings)
    for view in pending_views(store):  # a model changed since the last run: re-embed first
        result = reembed(store, view)
        print(f"re-embedded {view} with {result.model}: {result.vectors} vectors")
    print(f"feast apply: feature views {sorted(v.name for v in store.list_feature_views())}")

    stop = threading.Event()
    processor = Processor(settings, store, ProcessorConfig.from_settings(settings, definition.topic_prefix))
    worker = threading.Thread(target=processor.run, args=(stop,), name="processor", daemon=True)
    worker.start()
    if not processor.assigned.wait(60):
        raise FeatureCtlError(
            "the stream processor did not join its consumer group within 60s",
            f"check that Kafka is up (`featurectl stack status`); consumer group {settings.processor_group}",
        )
    print(f"stream processor running (group {settings.processor_group})")
    from featurectl.demo_serving import ModelTraffic, check_consistency

    traffic = ModelTraffic(settings, Postgres(settings).app_conninfo())
    try:
        traffic.start()
        print(f"feature server at {traffic.server.url}: a model service looks up purchase_model throughout")
        tag = uuid.uuid4().hex[:8]
        ids = run_workload(Postgres(settings).app_conninfo(), tag)
        print(f"\nworkload {tag}: rows changed in Postgres {ids}\n")

        topics = [definition.topic_for(t) for t in ("public.customers", "public.products", "public.orders")]
        keys = {
            ("customers", ids["customer"]),
            ("customers", ids["bad_customer"]),
            ("products", ids["product"]),
            ("orders", ids["order"]),
        }
        events = collect(
            settings.kafka_client(),
            topics,
            lambda e: (e.topic.rsplit(".", 1)[-1], (e.key or {}).get("id")) in keys,
            8,
            60,
        )
        print("change events as a consumer reads them:")
        for event in events:
            print(render(event))

        def read() -> dict[str, list[Any]]:
            return store.get_online_features(
                features=[
                    "customer_profile:segment",
                    "customer_profile:credit_limit",
                    "customer_profile:country",
                ],
                entity_rows=[{"customer_id": ids["customer"]}, {"customer_id": ids["bad_customer"]}],
            ).to_dict()

        features, waited = wait_online(
            read,
            lambda f: f["segment"][0] == "gold",
            600,
            lambda: f"{processor.processed} rows written, {processor.dead_lettered} dead letters",
        )
        print(f"\nonline features via FeatureStore.get_online_features ({waited:.2f}s after the workload):")
        print(
            f"  customer {ids['customer']}: segment={features['segment'][0]} "
            f"credit_limit={features['credit_limit'][0]} country={features['country'][0]}"
        )
        print(
            f"  customer {ids['bad_customer']} (bad row): segment={features['segment'][1]} "
            f"credit_limit={features['credit_limit'][1]}  <- never reached the online store"
        )
        order = store.get_online_features(
            features=["order_status:status"], entity_rows=[{"order_id": ids["order"]}]
        ).to_dict()
        print(f"  order {ids['order']} (deleted in Postgres): status={order['status'][0]}")

        training_set(store, ids["customer"])
        orders_per_customer(
            store, Postgres(settings).app_conninfo(), ids["customer"], ids["product"], processor
        )
        over_http(settings, ids["customer"], ids["product"])
        similar(store, [ids["product"], ids["product_2"], ids["product_3"]], processor)

        print("\ndead-letter topic (personal data as customer_profile's pii.* tags say: hashed, masked):")
        letters = [
            d
            for _, d in list_dead_letters(settings)
            if d.topic.endswith(".customers") and _key_id(d.key) == ids["bad_customer"]
        ]
        for letter in letters:
            print(
                f"  {letter.topic}[{letter.partition}] offset={letter.offset} view={letter.feature_view}: {letter.reason}"
            )
            for f in letter.failed_expectations:
                print(f"    {f['expectation']}({f['column']}) value={f['value']!r}")
            after = json.loads(letter.value or b"{}").get("after") or {}
            print(
                f"    kept: email={after.get('email')!r} full_name={after.get('full_name')!r} (pii {letter.pii})"
            )
        freshness = processor.pipeline.freshness.summary()
        drifting = drift_check(settings, store, Postgres(settings).app_conninfo(), tag)
        if "customer_profile.credit_limit" not in drifting:
            raise FeatureCtlError(
                "the drift check did not find the planted shift of customer_profile.credit_limit",
                "see the drift table above: a threshold (drift.threshold.* tags) may be too loose",
            )
        print(
            f"\ncommit-to-online freshness: {freshness} "
            "(a first run includes topic creation and the processor's cold start; "
            "steady state: bench/processor_bench.py)"
        )
        traffic.stop()
        check_consistency(store, traffic)
    finally:
        traffic.stop()
        stop.set()
        worker.join(30)
