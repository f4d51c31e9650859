"""Drift end to end: a shift planted in Postgres reaches the history through CDC and the processor, and
`featurectl drift` (exit 1), its metrics, `featurectl health` and the HTML report name the feature; Feast's
own `feast monitor run` works on the repository and its baseline is the reference."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests

from serving.feature_server import FeastUi
from stores.repository import feast_apply
from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, cli_background, history_rows, wait_until
from tests.integration.platform import Platform
from tests.integration.test_operations import free_port, scrape, value


def insert(conninfo: str, n: int, country: str, mean: float, tag: str) -> None:
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO customers (email, full_name, country, credit_limit) "
            "SELECT 'drift-' || %s || '-' || g || '@example.com', 'Drift ' || g, %s, "
            "round((%s + 50 * sin(g * 1.7) + 30 * cos(g * 0.37))::numeric, 2) FROM generate_series(1, %s) g",
            (tag, country, mean, n),
        )


def feast(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "feast"), *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_planted_shift_is_named_by_drift_metrics_health_and_the_report(
    stack: StackHandle, platform: Platform, tmp_path: Path
) -> None:
    # The view's reference is Feast's monitoring baseline (set below with `feast monitor run`).
    views = platform.repo / "customers.py"
    views.write_text(
        views.read_text().replace(
            '"cdc.table": "public.customers",',
            '"cdc.table": "public.customers", "drift.reference": "baseline",',
        )
    )
    feast_apply(platform.repo)
    platform.start_processor("p")
    tag = uuid.uuid4().hex[:8]

    def in_history(n: int) -> bool:
        rows = history_rows(platform.repo, "customer_profile", ["email", "cdc_op"])
        return sum(1 for r in rows if r["cdc_op"] == "c") >= n

    insert(stack.app, 400, "DE", 1000, tag)
    wait_until(lambda: in_history(400), 120, "the reference rows in the history")
    monitored = feast(platform.repo, "monitor", "run", "--set-baseline", "--feature-view", "customer_profile")
    assert monitored.returncode == 0 and "Baseline: SET" in monitored.stdout, (
        monitored.stdout + monitored.stderr
    )
    assert "Features computed: 0" not in monitored.stdout, monitored.stdout
    # The Monitoring page of `featurectl ui` reads the same metrics through the REST API `feast ui` mounts.
    ui = FeastUi(platform.repo, "127.0.0.1", free_port(), log=tmp_path / "ui.log")
    ui.start()
    try:
        baseline = requests.get(
            f"{ui.url}/api/v1/monitoring/metrics/baseline",
            params={"project": platform.store().project, "feature_view_name": "customer_profile"},
            timeout=30,
        ).json()
    finally:
        ui.stop()
    by_feature = {row["feature_name"]: row for row in baseline}
    assert by_feature["credit_limit"]["row_count"] >= 400 and by_feature["credit_limit"]["mean"] > 0, baseline
    start = datetime.now(UTC)  # every reference row committed before this

    # The planted shift: credit limits five times higher, all from France.
    insert(stack.app, 300, "FR", 5000, tag + "x")
    wait_until(lambda: in_history(700), 120, "the shifted rows in the history")
    end = datetime.now(UTC)
    window = ["--until", end.isoformat(), "--window", f"{(end - start).total_seconds():.6f}s"]
    env = {**platform.env, "FEATURECTL_DATA_DIR": str(platform.root / "ops")}

    checked = cli("drift", "customer_profile", *window, "--html", str(tmp_path / "drift.html"), env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "DRIFT in" in checked.stdout and "credit_limit" in checked.stdout.split("DRIFT in")[1], (
        checked.stdout
    )
    assert "Feast's monitoring baseline" in checked.stdout  # the declared reference was used
    page = (tmp_path / "drift.html").read_text()
    assert 'data-feature="credit_limit"' in page and 'class="reference"' in page and 'class="current"' in page

    # The scheduled job exports the scores; health warns, naming the feature.
    port = free_port()
    job = cli_background(
        "drift",
        "customer_profile",
        *window,
        "--schedule",
        "1h",
        "--metrics-port",
        str(port),
        env=env,
        log=tmp_path / "drift.log",
    )
    try:
        wait_until(
            lambda: (
                value(
                    scrape(port),
                    "featurectl_feature_drifting",
                    feature_view="customer_profile",
                    feature="credit_limit",
                )
                == 1
            ),
            60,
            "featurectl_feature_drifting for credit_limit on /metrics",
        )
        m = scrape(port)
        assert (
            value(
                m,
                "featurectl_feature_drift",
                feature_view="customer_profile",
                feature="credit_limit",
                metric="ks",
            )
            > 0.5
        )
        assert value(m, "featurectl_drift_rows", feature_view="customer_profile", sample="current") >= 300
    finally:
        job.terminate()
        job.wait(30)
    secrets = {
        f"FEATURECTL_{f.upper()}": stack.settings.require_secret(f)
        for f in ("pg_app_password", "debezium_password")
    }
    health = cli("health", "--file", str(platform.definition.path), env={**env, **secrets})
    line = next((ln for ln in health.stdout.splitlines() if "drift customer_profile" in ln), "")
    assert "credit_limit" in line and "drifted" in line, health.stdout + health.stderr
