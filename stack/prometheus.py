"""A local Prometheus (Debian's ``prometheus`` package) for a stack without Docker:
``featurectl stack up --with prometheus`` or ``FEATURECTL_MONITORING=1``.

It scrapes what docker-compose's Prometheus scrapes (monitoring/prometheus/prometheus.yml: the processor
on 29464, ``featurectl serve`` on 29465, scheduled jobs on 29466-29470) and evaluates the same alert rules
(monitoring/prometheus/alerts.yml, read in place: ``promtool check rules`` and ``promtool test rules`` run
in CI, tests/unit/test_prometheus_rules.py). Its config is written into the data directory at each start,
from the shipped one with two changes: the rule file's path, and the scrape interval
(``FEATURECTL_PROMETHEUS_SCRAPE_INTERVAL_S``). Listens on 127.0.0.1 only; data in ``<data_dir>/prometheus``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import requests
import yaml

from core import procs
from core.settings import PROJECT_ROOT, Settings
from services import system

logger = logging.getLogger(__name__)

SHIPPED = PROJECT_ROOT / "monitoring" / "prometheus"


def local_config(settings: Settings, rules: Path = SHIPPED / "alerts.yml") -> dict[str, Any]:
    """The shipped scrape config, with the rule file at ``rules`` and the configured scrape interval."""
    config: dict[str, Any] = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
    interval = f"{settings.prometheus_scrape_interval_s:g}s"
    config["global"] = {
        **config.get("global", {}),
        "scrape_interval": interval,
        "evaluation_interval": interval,
    }
    config["rule_files"] = [str(rules)]
    return config


class PrometheusServer:
    name = "prometheus"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.data_dir / "prometheus"
        self.config_file = self.home / "prometheus.yml"
        # The config file's path is on its command line: that is the marker.
        self.daemon = procs.Daemon(
            self.name,
            self.home / "prometheus.pid",
            settings.data_dir / "logs" / "prometheus.log",
            str(self.config_file),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    def ensure_installed(self) -> None:
        system.ensure_command("prometheus", "prometheus")  # with promtool

    def pid(self) -> int | None:
        return self.daemon.pid()

    def start(self) -> None:
        self.ensure_installed()
        if self.pid() is not None:
            logger.info("prometheus: already running (pid %s)", self.pid())
            return
        procs.ensure_port_free(self.settings.prometheus_port, self.name, "FEATURECTL_PROMETHEUS_PORT")
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.settings.data_dir / "logs").mkdir(exist_ok=True)
        self.config_file.write_text(
            "# written by featurectl stack up from monitoring/prometheus/prometheus.yml; edits are overwritten\n"
            + yaml.safe_dump(local_config(self.settings), sort_keys=False)
        )
        argv = [
            "prometheus",
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.settings.prometheus_port}",
            "--storage.tsdb.retention.time=15d",
        ]
        pid = procs.spawn(self.daemon, argv)
        procs.wait_for(
            self.ready,
            self.settings.startup_timeout_s,
            "prometheus to answer /-/ready",
            check=lambda: procs.died_check(self.daemon, pid),
        )
        logger.info("prometheus: ready on %s (rules %s)", self.url, SHIPPED / "alerts.yml")

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> bool:
        return procs.stop(self.daemon)

    def wipe(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
