"""/healthz and /readyz on the metrics port (core/health.py): what Kubernetes' probes and Compose's
healthchecks read. Readiness follows the processor's life (loading, consuming, stopping); liveness fails only
when the loop is stuck past Kafka's own bound, so a restart would help."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from core import metrics
from core.health import HEALTH, Health
from core.ports import free_port


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    now = [1000.0]
    monkeypatch.setattr("core.health.time.monotonic", lambda: now[0])
    yield now


def test_a_process_that_reports_nothing_is_live_and_ready() -> None:
    assert Health().live()[0] and Health().readiness()[0]


def test_readiness_follows_the_processor(clock: list[float]) -> None:
    health = Health()
    health.watch(300)
    assert health.readiness() == (False, "starting: loading the registry, suites and models")
    assert health.live()[0]
    health.ready()
    assert health.readiness()[0]
    health.stopping()
    assert health.readiness() == (False, "stopping")


def test_liveness_fails_only_past_the_bound(clock: list[float]) -> None:
    health = Health()
    health.watch(300)
    health.ready()
    clock[0] += 300
    assert health.live()[0], "at the bound: still live"
    clock[0] += 1
    live, why = health.live()
    assert not live and "stuck" in why
    assert not health.readiness()[0]
    health.beat()
    assert health.live()[0] and health.readiness()[0]


def test_the_metrics_port_answers_health_and_metrics() -> None:
    port = free_port()
    metrics.serve(port)
    url = f"http://127.0.0.1:{port}"
    HEALTH.watch(300)
    try:
        starting = requests.get(f"{url}/readyz", timeout=5)
        assert starting.status_code == 503 and starting.json()["detail"].startswith("starting")
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        HEALTH.ready()
        ready = requests.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
        assert "featurectl_commit_to_online_seconds" in requests.get(f"{url}/metrics", timeout=5).text
    finally:
        HEALTH.reports = False  # the process-wide object: leave it as other tests expect
