"""The shipped Prometheus rules through Prometheus' own tool: they load, and the alerts fire when they
should (monitoring/prometheus/alerts_test.yml); the local stack's rendered config is valid too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from core.settings import PROJECT_ROOT, load_settings
from stack.prometheus import local_config

RULES = PROJECT_ROOT / "monitoring" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: ./dev.sh test installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def test_the_alert_rules_load_and_fire_as_their_unit_tests_say() -> None:
    checked = promtool("check", "rules", str(RULES / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULES / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_local_stacks_config_is_valid_and_scrapes_every_documented_port(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(local_config(load_settings())))
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    targets = {
        t
        for job in yaml.safe_load(config.read_text())["scrape_configs"]
        for s in job["static_configs"]
        for t in s["targets"]
    }
    assert {f"127.0.0.1:{p}" for p in range(29464, 29471)} <= targets
