"""Each job's last runs, kept in ``<data_dir>/jobs/runs.json`` for ``featurectl health``, and counted
in the job metrics (core/metrics.py) for a job running on a schedule with ``--metrics-port``.

The file holds, per job, its last run and its last success; it is replaced atomically under an
exclusive lock, so jobs ending at the same time do not lose each other's record.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import metrics


@dataclass(frozen=True, slots=True)
class JobRun:
    job: str
    started: float  # unix time
    ended: float
    outcome: str  # success or failure
    error: str | None = None


def runs_file(data_dir: Path) -> Path:
    return data_dir / "jobs" / "runs.json"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def last_runs(data_dir: Path) -> dict[str, dict[str, JobRun]]:
    """job -> {"last": its last run, "last_success": its last successful run (if any)}."""
    path = runs_file(data_dir)
    try:
        raw: dict[str, dict[str, dict[str, Any]]] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {job: {k: JobRun(**v) for k, v in runs.items()} for job, runs in raw.items()}


def record(data_dir: Path, run: JobRun) -> None:
    """Count ``run`` in the metrics and keep it as the job's last (and last successful) run."""
    metrics.JOB_RUNS.labels(run.job, run.outcome).inc()
    metrics.JOB_DURATION.labels(run.job).observe(run.ended - run.started)
    metrics.JOB_LAST_RUN.labels(run.job, run.outcome).set(run.ended)
    path = runs_file(data_dir)
    with _locked(path):
        current = {job: {k: asdict(v) for k, v in runs.items()} for job, runs in last_runs(data_dir).items()}
        entry = current.setdefault(run.job, {})
        entry["last"] = asdict(run)
        if run.outcome == "success":
            entry["last_success"] = asdict(run)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
        os.replace(tmp, path)


def recorded(data_dir: Path, job: str, fn: Callable[[], None]) -> None:
    """Run ``fn`` and record the run as ``job``; a failure is recorded, then raised again."""
    started = time.time()
    try:
        fn()
    except BaseException as exc:
        # Ctrl-C of a scheduled job between runs is not a failed run; inside one it is.
        record(
            data_dir,
            JobRun(
                job, started, time.time(), "failure", str(exc).splitlines()[0][:300] or type(exc).__name__
            ),
        )
        raise
    record(data_dir, JobRun(job, started, time.time(), "success"))
