"""Several processor processes on one host, sharing one consumer group: ``featurectl process --workers N``.

One Python process runs one batch at a time on one core; N worker processes share the topics'
partitions as N copies on N hosts would (streams/processor.py: each partition has one owner, a copy
that lost its partitions is fenced off the stores), so every guarantee of one copy holds for each.

Contract of ``Workers``:
- Start-up: every worker loads what it needs (Feast, suites, models: seconds), then waits until all
  have loaded before joining the group, so they join together instead of the first taking every
  partition and handing most of them back seconds later.
- A worker killed by a signal (kill -9, the OOM killer), or one that exits 0 without the supervisor
  asking (someone sent it alone a SIGTERM), is started again after a back-off (1 s, doubling to 30 s,
  reset after a minute of life); the group gives its partitions to the others meanwhile, and its
  uncommitted batch is read again (at-least-once, idempotent sinks).
- A worker that exits with an error (it logged why: a configuration error, the source database
  replaced, a retention gap) stops them all: ``wait`` returns that exit code. Restarting it would
  fail the same way; a service manager's restart policy decides what happens next.
- ``stop`` asks every worker to finish its batch, commit and leave (SIGTERM), and ``wait`` returns 0
  once they have. A worker catches SIGTERM from its first instruction: one still loading when asked
  leaves as soon as it has loaded, cleanly and logged, rather than dying mid-import.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger(__name__)

# What a worker runs: ``target(index, ready, stop)``, where ``ready()`` blocks until every worker has
# loaded (call it right before joining the group) and ``stop`` is set by SIGTERM/SIGINT. It returns
# once ``stop`` is set; an exception or a non-zero ``SystemExit`` is its failure.
WorkerTarget = Callable[[int, Callable[[], None], threading.Event], None]

RESTART_MIN_S, RESTART_MAX_S, STABLE_S = 1.0, 30.0, 60.0
# spawn, not fork: the parent may hold threads and sockets (a metrics server, Kafka clients) that a
# forked child must not inherit half-initialised.
_CTX = multiprocessing.get_context("spawn")


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _child(
    target: WorkerTarget,
    index: int,
    loaded: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
) -> None:
    stop = threading.Event()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    # Blocked since the parent spawned this process (Workers._start): one that came meanwhile is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def ready() -> None:
        loaded.set()
        go.wait()

    target(index, ready, stop)


@dataclass
class _Slot:
    index: int
    loaded: multiprocessing.synchronize.Event
    proc: BaseProcess | None = None
    started_at: float = 0.0
    backoff_s: float = RESTART_MIN_S
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Workers:
    """``count`` processes running ``target``, supervised as the module docstring says."""

    target: WorkerTarget
    count: int
    _go: multiprocessing.synchronize.Event = field(default_factory=_CTX.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _slots: list[_Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"workers must be at least 1, got {self.count}")
        self._slots = [_Slot(i, _CTX.Event()) for i in range(self.count)]

    @property
    def pids(self) -> list[int | None]:
        """Each worker's current pid (None while it waits to be restarted)."""
        return [s.proc.pid if s.proc is not None and s.proc.is_alive() else None for s in self._slots]

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self._slots)

    def start(self) -> None:
        for slot in self._slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        proc = _CTX.Process(
            target=_child,
            args=(self.target, slot.index, slot.loaded, self._go),
            name=f"featurectl-worker-{slot.index}",
        )
        # The child inherits the signal mask through fork and exec: with the stop signals blocked, a stop
        # during its interpreter's start (imports, unpickling) waits for _child's handler instead of killing it
        # unlogged before it could write anything.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        slot.proc, slot.started_at, slot.restart_at = proc, time.monotonic(), None
        logger.info("worker %d started (pid %s)", slot.index, proc.pid)

    def stop(self) -> None:
        """Ask every worker to finish its batch, commit and exit; ``wait`` then returns."""
        self._stopping.set()
        self._go.set()  # a worker still waiting to join goes on, sees its stop and leaves at once
        for slot in self._slots:
            if slot.proc is not None and slot.proc.is_alive() and slot.proc.pid is not None:
                os.kill(slot.proc.pid, signal.SIGTERM)

    def wait(self, poll_s: float = 0.2) -> int:
        """Supervise until every worker has exited; 0 after ``stop``, else the failing worker's exit code."""
        failure = 0
        while True:
            if not self._go.is_set() and all(s.loaded.is_set() for s in self._slots):
                logger.info("all %d workers loaded: joining the group", self.count)
                self._go.set()
            now = time.monotonic()
            for slot in self._slots:
                proc = slot.proc
                if proc is None:
                    if slot.restart_at is not None and now >= slot.restart_at and not self._stopping.is_set():
                        slot.restarts += 1
                        self._start(slot)
                    continue
                if proc.is_alive():
                    continue
                code = proc.exitcode
                proc.close()
                slot.proc = None
                if self._stopping.is_set():
                    # The stop is going on regardless, but say the worker did not finish cleanly.
                    if code != 0:
                        logger.warning("worker %d exited with status %s while stopping", slot.index, code)
                    continue
                if code is not None and code <= 0:  # killed, or stopped alone: the others carry on meanwhile
                    if now - slot.started_at > STABLE_S:
                        slot.backoff_s = RESTART_MIN_S
                    slot.restart_at = now + slot.backoff_s
                    logger.warning(
                        "worker %d %s; starting it again in %.0fs (its partitions go to the others meanwhile)",
                        slot.index,
                        f"was killed by signal {-code}" if code else "exited without being asked to",
                        slot.backoff_s,
                    )
                    slot.backoff_s = min(slot.backoff_s * 2, RESTART_MAX_S)
                    continue
                failure = code or 1
                logger.error("worker %d exited with status %s: stopping the others", slot.index, code)
                self.stop()
            if all(s.proc is None for s in self._slots) and (
                self._stopping.is_set() or all(s.restart_at is None for s in self._slots)
            ):
                return failure
            time.sleep(poll_s)


def run_workers(target: WorkerTarget, count: int) -> int:
    """Run ``count`` workers in the foreground until SIGTERM/SIGINT (then stop them all cleanly);
    returns the exit status for the command (see ``Workers``)."""
    workers = Workers(target, count)

    def on_signal(*_: Any) -> None:
        workers.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    workers.start()
    return workers.wait()
