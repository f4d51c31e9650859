"""``feast serve`` and ``feast ui`` over the feature repository, as child processes with a readiness probe.

The feature server reads the online store the processor writes (SQLite in WAL mode: readers never
block the writer) and re-reads the registry every few seconds, so a ``feast apply`` reaches it too.
The web UI reads the registry only (through the REST API it mounts under ``/api/v1``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import requests

from core.errors import FeatureCtlError
from core.procs import port_owner, realtime_preexec, wait_for, warn_unless_realtime
from serving.feast_cli import ADDRESS_ENV, LOOKUPS_ENV

logger = logging.getLogger(__name__)


class FeatureServer:
    """One ``feast serve`` process (gunicorn and ``workers`` uvicorn workers) running Feast's app behind
    serving/fast_app.py. ``start`` returns once ``GET /health`` answers 200."""

    command = "serve"
    health_path = "/health"
    port_setting = "FEATURECTL_SERVE_PORT"

    def __init__(
        self,
        repo: Path,
        host: str,
        port: int,
        registry_ttl_s: int = 5,
        log: Path | None = None,
        metrics_port: int | None = None,
        rt_priority: int = 0,
        workers: int = 1,
        lookups: str = "direct",
    ) -> None:
        self.repo = repo
        self.workers = workers
        self.lookups = (
            lookups  # "direct": serving/fast_app.py answers plain lookups; "feast": Feast's app all
        )
        self.host = host
        self.port = port
        self.metrics_port = metrics_port  # Feast's own server metrics (serving/feast_cli.py), on ``host``
        self.registry_ttl_s = registry_ttl_s
        # > 0: SCHED_RR at this priority, for the server and the worker it forks (settings.serving_rt_priority).
        self.rt_priority = rt_priority
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self) -> bool:
        """True if a feature server answers GET /health at this address."""
        try:
            return requests.get(f"{self.url}{self.health_path}", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""
            raise FeatureCtlError(
                f"feast {self.command} exited with code {self.proc.returncode} during start-up:\n{tail}",
                "fix what its log names (a broken feature_store.yaml, a missing `feast apply`)",
            )

    def start(self, timeout_s: float = 90) -> None:
        owner = port_owner(self.port)
        if owner:
            raise FeatureCtlError(
                f"port {self.port} is already in use by {owner}",
                f"stop that program, or set {self.port_setting} to a free port",
            )
        argv = [
            sys.executable,
            "-m",
            "serving.feast_cli",
            self.command,
            "-h",
            self.host,
            "-p",
            str(self.port),
        ]
        argv += self._extra_args()
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 - handed to the child
        env = {**os.environ, "FEAST_USAGE": "False", LOOKUPS_ENV: self.lookups}
        if self.metrics_port is not None:
            owner = port_owner(self.metrics_port)
            if owner:
                raise FeatureCtlError(
                    f"metrics port {self.metrics_port} is already in use by {owner}",
                    "pick another --metrics-port",
                )
            argv.append("--metrics")
            env[ADDRESS_ENV] = f"{self.host}:{self.metrics_port}"
        self.proc = subprocess.Popen(
            argv,
            cwd=self.repo,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            env=env,
            # Inherited by gunicorn's worker (a fork) and its threads: the whole lookup path.
            preexec_fn=realtime_preexec(self.rt_priority) if self.rt_priority > 0 else None,
        )
        wait_for(self.healthy, timeout_s, f"`feast {self.command}` at {self.url}", check=self._alive)
        if self.rt_priority > 0:
            warn_unless_realtime(self.proc.pid, f"feast {self.command}", self.rt_priority)
        logger.info(
            "feast %s ready at %s (repo %s, pid %d)", self.command, self.url, self.repo, self.proc.pid
        )

    def _extra_args(self) -> list[str]:
        # Feast's default --max-requests 1000 recycles its one gunicorn worker every ~1000 lookups; the
        # new worker re-imports Feast before it answers again (measured: a 100-entity p99 of 460 ms under
        # ingest, and past 10 s on a busy 2-core host). Gunicorn's own default, 0, never recycles it.
        return [
            "--no-access-log",
            "--registry_ttl_sec",
            str(self.registry_ttl_s),
            "--max-requests",
            "0",
            "--workers",
            str(self.workers),
        ]

    def stop(self, timeout_s: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class FeastUi(FeatureServer):
    """One ``feast ui`` process (Feast's web UI: feature views, entities, sources, their tags).

    It refreshes the registry as ``feature_store.yaml``'s ``cache_ttl_seconds`` says. Ready once
    ``GET /projects-list.json`` answers 200.
    """

    command = "ui"
    health_path = "/projects-list.json"
    port_setting = "FEATURECTL_UI_PORT"

    def _extra_args(self) -> list[str]:
        return []
