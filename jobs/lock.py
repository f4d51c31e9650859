"""One run of a job at a time: an exclusive ``flock`` on ``<data_dir>/locks/<job>.lock``.

The kernel releases the lock when the holder exits, even by SIGKILL, so a crashed run never
leaves a stale lock behind. The file records who holds it, for the message the second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.errors import TransientError


class JobRunning(TransientError):
    """Another run of the same job holds its lock: transient, a later run gets it (exit 75, schedulers retry)."""


@contextmanager
def job_lock(locks_dir: Path, job: str) -> Iterator[None]:
    """Hold ``job``'s lock for the block; raise JobRunning at once if another run holds it."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = locks_dir / f"{job.replace('/', '_')}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(errors="replace").strip() or "{}"
            raise JobRunning(
                f"job {job!r} is already running ({holder}); two runs of one job must not overlap",
                f"wait for it to finish (lock file {path}); this run did nothing",
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds")}
            ).encode(),
        )
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
