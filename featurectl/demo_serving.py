"""The demo's model traffic: lookups of the feature service ``purchase_model`` through `featurectl serve` while
the demo changes rows, logged by the server (serving/served_log.py), then checked against the history
(`featurectl consistency`): what was served is what a training set built as of each request holds."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import requests

from core.errors import FeatureCtlError
from core.settings import Settings

logger = logging.getLogger(__name__)

SERVICE = "purchase_model"


class ModelTraffic:
    """A feature server and a thread looking up recent customers and products every ``pause_s``, until ``stop``."""

    def __init__(self, settings: Settings, conninfo: str, pause_s: float = 0.02) -> None:
        from serving.feature_server import FeatureServer

        self.server = FeatureServer(
            settings.feature_repo,
            settings.serve_host,
            settings.serve_port,
            log=settings.data_dir / "logs" / "feature-server.log",
            rt_priority=settings.serving_rt_priority,
        )
        self.conninfo = conninfo
        self.pause_s = pause_s
        self.lookups = 0
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-traffic", daemon=True)

    def start(self) -> None:
        if self.server.healthy():
            raise FeatureCtlError(
                f"a feature server already answers at {self.server.url}",
                "stop it (the demo runs its own, to log and check what it serves), or set FEATURECTL_SERVE_PORT",
            )
        self.server.start()
        self.started_at = datetime.now(UTC)
        self._thread.start()

    def _ids(self) -> tuple[list[int], list[int]]:
        with psycopg.connect(self.conninfo) as conn:
            customers = [r[0] for r in conn.execute("SELECT id FROM customers ORDER BY id DESC LIMIT 40")]
            products = [r[0] for r in conn.execute("SELECT id FROM products ORDER BY id DESC LIMIT 10")]
        return customers or [1], products or [1]

    def _run(self) -> None:
        session = requests.Session()
        customers, products, refreshed = [1], [1], 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 2:  # new rows of the workload join the traffic
                try:
                    customers, products = self._ids()
                except psycopg.Error as exc:  # the last ids serve until the next refresh
                    logger.info("model traffic: ids not refreshed: %s", exc)
                refreshed = time.monotonic()
            n = random.randint(1, 4)
            body = {
                "feature_service": SERVICE,
                "entities": {
                    "customer_id": random.choices(customers, k=n),
                    "product_id": random.choices(products, k=n),
                },
            }
            try:
                session.post(
                    f"{self.server.url}/get-online-features", json=body, timeout=10
                ).raise_for_status()
                self.lookups += 1
            except requests.RequestException as exc:
                logger.warning("model traffic: a lookup failed: %s", exc)
            self._stop.wait(self.pause_s)

    def stop(self) -> None:
        """Stop the lookups, then the server (its log shipped before it returns)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        self.server.stop()


def check_consistency(store: Any, traffic: ModelTraffic) -> None:
    """`featurectl consistency purchase_model` over the traffic's window; real skew stops the demo."""
    from monitoring import consistency

    end = datetime.now(UTC) + timedelta(seconds=1)
    report = consistency.check(store, SERVICE, traffic.started_at - timedelta(seconds=1), end)
    print(
        f"\ntraining equals serving (`featurectl consistency {SERVICE}`): {traffic.lookups} lookups "
        "made while the rows changed, logged by the feature server, recomputed from the history as of each:"
    )
    for line in consistency.as_table(report):
        print(f"  {line}")
    if report.rows == 0:
        raise FeatureCtlError(
            "the feature server logged none of the demo's lookups",
            f"see its log ({traffic.server.log}): the served-log shipper reports there",
        )
    if report.skew:
        raise FeatureCtlError(
            f"{report.skew} served value(s) differ from the history as of their request (not freshness lag)",
            "see the examples above: what the online store served is not what training would read",
        )
