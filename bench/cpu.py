"""CPU seconds per part of the local stack: where a bench's cores went while it measured.

On 2 cores the processor, the stores, Kafka and Connect share the CPU, so a throughput or a tail is often
another process's use of a core; a bench prints each part's share of the cores beside its figure.
"""

from __future__ import annotations

import os
import time

import psutil


def component(proc: psutil.Process, children: str, own: str = "bench client") -> str | None:
    """Which part of the stack ``proc`` is (None: not one of ours); ``children`` names this process's
    spawned children (the bench's writer, its processor workers), ``own`` this process."""
    try:
        line = " ".join(proc.cmdline())
        if proc.pid == os.getpid():
            return own
        if "multiprocessing" in line and proc.ppid() == os.getpid():
            return children
        if "postgres" in proc.name() or "/postgresql/" in line:
            # The online store's Postgres (pgvector) is its own build (stores/postgres/server.py).
            return "Postgres (online store)" if "pgserver" in proc.exe() else "Postgres (source)"
    except psutil.Error:
        return None
    if "redis-server" in line:
        return "Redis (online store)"
    if "ConnectDistributed" in line or "connect-distributed" in line:
        return "Kafka Connect (Debezium)"
    if "kafka.Kafka" in line:
        return "Kafka broker"
    if "feast serve" in line or ("feast" in line and "serve" in line):
        return "feast serve"
    if "featurectl.cli" in line and "process" in line:
        return "processor"
    return None


def cpu_seconds(children: str, own: str = "bench client") -> dict[int, tuple[str, float]]:
    """CPU seconds so far of each stack process, by pid: (its component, seconds)."""
    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter():
        name = component(proc, children, own)
        if name is None:
            continue
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = (name, times.user + times.system)
    return out


class CpuShares:
    """Cores in use per component between ``start`` and ``stop``: ``str(shares)`` is the bench's line."""

    def __init__(self, children: str, own: str = "bench client") -> None:
        self.children, self.own = children, own
        self.cores: dict[str, float] = {}

    def start(self) -> None:
        self._t, self._before = time.monotonic(), cpu_seconds(self.children, self.own)

    def stop(self) -> dict[str, float]:
        elapsed, after = time.monotonic() - self._t, cpu_seconds(self.children, self.own)
        # Per process: one that exited meanwhile (a backend, a worker) is not counted (its last seconds
        # are lost, not subtracted from the others of its component); one that started counts whole.
        self.cores = {}
        for pid, (name, seconds) in after.items():
            start = self._before.get(pid, (name, 0.0))[1]
            self.cores[name] = self.cores.get(name, 0.0) + (seconds - start) / elapsed
        return self.cores

    def __str__(self) -> str:
        return (
            f"{psutil.cpu_count()} cores, cores in use per component: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.cores.items(), key=lambda kv: -kv[1]))
            + f"; all of them {sum(self.cores.values()):.2f}"
        )
