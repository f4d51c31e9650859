"""``feast serve`` and ``feast ui`` over the feature repository, as child processes with a readiness probe.

The feature server reads the online store the processor writes (SQLite in WAL mode: readers never
block the writer) and re-reads the registry every few seconds, so a ``feast apply`` reaches it too.
The web UI reads the registry only (through the REST API it mounts under ``/api/v1``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from core.errors import FeatureCtlError
from core.procs import port_owner, realtime_preexec, wait_for, warn_unless_realtime
from serving.feast_cli import ADDRESS_ENV, LOOKUPS_ENV, REUSE_PORT_ENV
from serving.served_log import SPOOL_ENV

logger = logging.getLogger(__name__)


class FeatureServer:
    """``workers`` ``feast serve`` processes (each gunicorn and one uvicorn worker) running Feast's app behind
    serving/fast_app.py, and the shipper of their served logs (serving/log_shipper.py: the lookups of feature
    services with a ``logging_config``, spooled under ``spool``). ``start`` returns once ``GET /health`` answers
    200; ``stop`` stops the servers, then the shipper, which ships what they logged first."""

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
        tls: tuple[Path, Path] | None = None,
        spool: Path | None = None,
    ) -> None:
        self.repo = repo
        # One spool per host and port: a server restarted there ships what the last one left (replicas sharing
        # the data volume each have their own).
        self.spool = spool or repo / "data" / "logs" / "_spool" / f"{socket.gethostname()}-{port}"
        self.shipper: subprocess.Popen[bytes] | None = None
        self.workers = workers
        self.tls = tls  # (key, certificate): HTTPS only (Feast's own --key/--cert)
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
        self.procs: list[subprocess.Popen[bytes]] = []
        self._metrics_dir = ""

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def healthy(self) -> bool:
        """True if a feature server answers GET /health at this address (over TLS, without checking its
        certificate: this asks whether our own child answers, not who it is)."""
        try:
            answer = requests.get(f"{self.url}{self.health_path}", timeout=1, verify=not self.tls)
            return answer.status_code == 200
        except requests.RequestException:
            return False

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The first server process (the one serving Feast's metrics), or None before ``start``."""
        return self.procs[0] if self.procs else None

    def _alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""
                raise FeatureCtlError(
                    f"feast {self.command} exited with code {proc.returncode} during start-up:\n{tail}",
                    "fix what its log names (a broken feature_store.yaml, a missing `feast apply`)",
                )

    def _listening(self, proc: subprocess.Popen[bytes]) -> bool:
        """Whether ``proc`` (or its gunicorn worker) listens on the port."""
        try:
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            return any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port
                for member in family
                for c in member.net_connections("tcp")
            )
        except psutil.Error:
            return False

    def start(self, timeout_s: float = 90) -> None:
        """Start ``workers`` server processes on the port. Several bind it with SO_REUSEPORT, each its own
        socket, so the kernel spreads connections over them: gunicorn's workers share one socket, where the
        first to wake accepts a burst of new connections (wrk's 8 often all landed in one of two workers,
        halving the lookups/s of 100-entity requests). Each process is a gunicorn master with one worker."""
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
        if self.tls:
            key, cert = self.tls
            for path, what in ((key, "private key"), (cert, "certificate")):
                if not path.is_file():
                    raise FeatureCtlError(
                        f"the feature server's TLS {what} {path} does not exist",
                        "set FEATURECTL_SERVE_TLS_KEY and FEATURECTL_SERVE_TLS_CERT to PEM files this user can read",
                    )
            argv += ["--key", str(key), "--cert", str(cert)]
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 - handed to the children
        env = {**os.environ, "FEAST_USAGE": "False", LOOKUPS_ENV: self.lookups}
        if self.command == "serve":
            env[SPOOL_ENV] = str(self.spool)
        if self.workers > 1:
            env[REUSE_PORT_ENV] = "1"
            # One Prometheus multiprocess directory for all: the first process's metrics server adds them up.
            self._metrics_dir = tempfile.mkdtemp(prefix="featurectl-serve-metrics-")
            env["PROMETHEUS_MULTIPROCESS_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        metrics: list[str] = []
        if self.metrics_port is not None:
            owner = port_owner(self.metrics_port)
            if owner:
                raise FeatureCtlError(
                    f"metrics port {self.metrics_port} is already in use by {owner}",
                    "pick another --metrics-port",
                )
            metrics = ["--metrics"]
            env[ADDRESS_ENV] = f"{self.host}:{self.metrics_port}"
        if self.command == "serve":
            # Before the servers: a stop while they start (SIGTERM as soon as /health answers) still ships what
            # they logged (the spool would wait for the next server on this host and port).
            self._start_shipper()
        for i in range(self.workers):
            proc = subprocess.Popen(
                argv + (metrics if i == 0 else []),
                cwd=self.repo,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                env=env,
                # Inherited by gunicorn's worker (a fork) and its threads: the whole lookup path.
                preexec_fn=realtime_preexec(self.rt_priority) if self.rt_priority > 0 else None,
            )
            self.procs.append(proc)
            wait_for(
                lambda proc=proc: self._listening(proc),  # type: ignore[misc]
                timeout_s,
                f"`feast {self.command}` process {i + 1} of {self.workers} on port {self.port}",
                check=self._alive,
            )
        wait_for(self.healthy, timeout_s, f"`feast {self.command}` at {self.url}", check=self._alive)
        if self.rt_priority > 0:
            for proc in self.procs:
                warn_unless_realtime(proc.pid, f"feast {self.command}", self.rt_priority)
        logger.info(
            "feast %s ready at %s (repo %s, pids %s)",
            self.command,
            self.url,
            self.repo,
            ", ".join(str(p.pid) for p in self.procs),
        )

    def _start_shipper(self) -> None:
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 - handed to the child
        self.shipper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.log_shipper",
                "--repo",
                str(self.repo),
                "--spool",
                str(self.spool),
            ],
            cwd=self.repo,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            env={**os.environ, "FEAST_USAGE": "False"},
        )
        logger.info("served-log shipper started (pid %d, spool %s)", self.shipper.pid, self.spool)

    def wait(self) -> int:
        """Block until a server process exits; stop the others; return its exit code. A shipper that exits is
        started again (the spool keeps what the servers log meanwhile)."""
        while True:
            for proc in self.procs:
                code = proc.poll()
                if code is not None:
                    self.stop()
                    return code
            if self.shipper is not None and self.shipper.poll() is not None:
                logger.error(
                    "the served-log shipper exited with code %d; starting it again", self.shipper.returncode
                )
                self._start_shipper()
            time.sleep(0.5)

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
            "1",  # one per process (``start``)
        ]

    def stop(self, timeout_s: float = 20) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._metrics_dir:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        if self.shipper is not None:  # after the servers: it ships what they wrote as they stopped
            if self.shipper.poll() is None:
                self.shipper.terminate()
            try:
                self.shipper.wait(max(timeout_s, 60))
            except subprocess.TimeoutExpired:
                logger.error("the served-log shipper did not finish in time; %s keeps the rest", self.spool)
                self.shipper.kill()
                self.shipper.wait()
            self.shipper = None


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
