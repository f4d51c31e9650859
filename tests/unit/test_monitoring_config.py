"""The Prometheus rules, scrape config and Grafana dashboard shipped for docker-compose users: they must
parse, and every metric they name must be one the platform exports (core/metrics.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import yaml

from core.metrics import REGISTRY
from core.settings import PROJECT_ROOT

MONITORING = PROJECT_ROOT / "monitoring"
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
RULES = yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text())
DASHBOARD = json.loads((MONITORING / "grafana" / "dashboards" / "featurectl.json").read_text())


def exported() -> set[str]:
    """Every series name the registry can expose (histograms: _bucket/_sum/_count; counters: _total)."""
    names = set()
    for metric in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(metric.type, [""])
        names |= {metric.name + s for s in suffixes}
    return names | {"up"}  # Prometheus' own per-target series


def selectors(expr: str) -> set[str]:
    """Metric names an expression reads (it must parse as PromQL)."""
    promql_parser.parse(expr)  # raises on a syntax error
    stripped = re.sub(r'"[^"]*"', "", expr)  # label values
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return {w for w in words if w.startswith(("featurectl_", "feast_")) or w == "up"}


def dashboard_exprs() -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in DASHBOARD["panels"]}


def test_alert_rules_parse_and_read_exported_metrics() -> None:
    rules: list[dict[str, Any]] = [r for g in RULES["groups"] for r in g["rules"]]
    assert rules
    known = exported()
    for rule in rules:
        names = selectors(rule["expr"])
        assert names and names <= known, f"{rule['alert']} reads {names - known}"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["action"]
    alerts = {r["alert"] for r in rules}
    # The day-2 failures the issue names each have an alert.
    assert {
        "FeaturectlSlotWalRetained",
        "FeaturectlConnectorNotRunning",
        "FeaturectlConsumerLagHigh",
        "FeaturectlDeadLetters",
        "FeaturectlFreshnessSlow",
        "FeaturectlProcessorDown",
        "FeaturectlJobFailed",
    } <= alerts


def test_dashboard_panels_read_exported_metrics_and_cover_the_essentials() -> None:
    known = exported()
    exprs = dashboard_exprs()
    for title, queries in exprs.items():
        for q in queries:
            names = selectors(q)
            assert names and names <= known, f"panel {title!r} reads {names - known}"
    read = {n for qs in exprs.values() for q in qs for n in selectors(q)}
    for essential in (
        "featurectl_commit_to_online_seconds_bucket",  # freshness
        "featurectl_rows_written_total",  # throughput
        "featurectl_consumer_lag",
        "featurectl_dead_letters_total",
        "featurectl_replication_slot_retained_wal_bytes",
    ):
        assert essential in read
    uids = {p["datasource"]["uid"] for p in DASHBOARD["panels"]}
    provisioned = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert uids == {d["uid"] for d in provisioned["datasources"]}


def test_compose_mounts_what_prometheus_and_grafana_read() -> None:
    services = COMPOSE["services"]
    prom = services["prometheus"]
    mounted = {v.split(":")[0].removeprefix("./") for v in prom["volumes"]}
    assert {"monitoring/prometheus/prometheus.yml", "monitoring/prometheus/alerts.yml"} <= mounted
    assert PROMETHEUS["rule_files"] == ["/etc/prometheus/alerts.yml"]
    listen = next(c for c in prom["command"] if c.startswith("--web.listen-address="))
    datasource = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://" + listen.split("=", 1)[1]
    grafana = {v.split(":")[1]: v.split(":")[0].removeprefix("./") for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "featurectl.yml").read_text()
    )
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert grafana[dashboards_dir] == "monitoring/grafana/dashboards"
    assert grafana["/etc/grafana/provisioning"] == "monitoring/grafana/provisioning"
    # The processor's documented metrics port is scraped.
    targets = {
        t for job in PROMETHEUS["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert "127.0.0.1:29464" in targets
