"""Prometheus on the local stack (no Docker): `stack up --with prometheus` starts Debian's Prometheus with
the shipped alert rules, and it scrapes a running processor's /metrics on the documented port."""

from __future__ import annotations

from typing import Any

import requests

from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, wait_until
from tests.integration.platform import Platform
from tests.integration.test_operations import insert_customers

PROCESSOR_PORT = "29464"  # monitoring/prometheus/prometheus.yml's target for the processor


def query(url: str, promql: str) -> list[dict[str, Any]]:
    try:
        body = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    except (requests.RequestException, ValueError):
        return []
    result: list[dict[str, Any]] = body.get("data", {}).get("result", [])
    return result


def test_stack_up_with_prometheus_scrapes_the_processor_and_loads_the_alert_rules(
    stack: StackHandle, platform: Platform
) -> None:
    env = {"FEATURECTL_PROMETHEUS_PORT": "26090", "FEATURECTL_PROMETHEUS_SCRAPE_INTERVAL_S": "1"}
    url = "http://127.0.0.1:26090"
    up = cli("stack", "up", "--with", "prometheus", env=env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = cli("stack", "status", env={**env, "FEATURECTL_MONITORING": "1"})
        assert any(ln.startswith("prometheus") and "RUNNING" in ln for ln in status.stdout.splitlines()), (
            status.stdout
        )

        rules = requests.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        names = {r["name"] for g in rules for r in g["rules"]}
        assert {"FeaturectlProcessorDown", "FeaturectlSlotWalRetained", "FeaturectlFeatureDrift"} <= names

        platform.start_processor("p", "--metrics-port", PROCESSOR_PORT)
        insert_customers(stack.app, 20)
        wait_until(
            lambda: any(
                float(s["value"][1]) >= 20
                for s in query(url, 'featurectl_rows_written_total{feature_view="customer_profile"}')
            ),
            90,
            "featurectl_rows_written_total scraped by Prometheus",
        )
        (target,) = query(url, 'up{job="featurectl-processor"}')
        assert target["value"][1] == "1" and target["metric"]["instance"] == f"127.0.0.1:{PROCESSOR_PORT}"
    finally:
        down = cli("stack", "down", "--service", "prometheus", env=env)
        assert "prometheus" in down.stdout, down.stdout + down.stderr
