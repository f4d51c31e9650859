"""Liveness and readiness of a long-running process, answered on its metrics port (``/healthz``, ``/readyz``).

What an orchestrator asks (Kubernetes probes, Compose healthchecks): is the process stuck, so that a restart
would help (liveness); is it doing its work (readiness). The stream processor reports both (streams/processor.py):
it is ready once it has loaded everything and joined its consumer group, until it is stopping; it is live while
its loop keeps turning: a loop that has not turned for longer than Kafka's own bound for a batch
(``max_poll_interval_ms``: past it the group has already given its partitions to another copy) is stuck.
A store or Kafka away is not stuck: the loop turns while it waits and retries. A process that reports nothing
(a job serving metrics) is live and ready while it answers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Health:
    """What one process reports; ``stale_after_s`` None: no liveness bound (a process without a loop)."""

    stale_after_s: float | None = None
    reports: bool = False  # whether anything reports here (else: live and ready while the process answers)
    _ready: bool = False
    _stopping: bool = False
    _beat: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def watch(self, stale_after_s: float) -> None:
        """Start reporting: not ready yet, stuck when the loop has not turned for ``stale_after_s``."""
        with self._lock:
            self.stale_after_s, self.reports, self._ready, self._stopping = stale_after_s, True, False, False
            self._beat = time.monotonic()

    def beat(self) -> None:
        """The loop turned (call once per turn)."""
        self._beat = time.monotonic()

    def ready(self) -> None:
        with self._lock:
            self._ready = True
            self._beat = time.monotonic()

    def stopping(self) -> None:
        with self._lock:
            self._stopping = True

    def live(self) -> tuple[bool, str]:
        """(live, why)."""
        if not self.reports or self.stale_after_s is None:
            return True, "running"
        idle = time.monotonic() - self._beat
        if idle > self.stale_after_s:
            return False, f"the loop has not turned for {idle:.0f}s (bound {self.stale_after_s:.0f}s): stuck"
        return True, f"the loop turned {idle:.1f}s ago"

    def readiness(self) -> tuple[bool, str]:
        """(ready, why)."""
        if not self.reports:
            return True, "running"
        if self._stopping:
            return False, "stopping"
        if not self._ready:
            return False, "starting: loading the registry, suites and models"
        return self.live()


HEALTH = Health()
"""This process's: the processor reports into it, the metrics server answers from it (core/metrics.py)."""
