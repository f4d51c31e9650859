"""Process plumbing shared by the services: pid files, port checks, spawn, graceful stop, polling.

Every wait here polls a probe until a deadline; nothing sleeps for a fixed time hoping a service
is ready.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

from core.errors import FeatureCtlError

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Daemon:
    """A long-running process the launcher owns, identified by its pid file and a command-line marker.

    The marker (for example the path of its config file) guards against a recycled pid: a pid
    whose command line lacks it is not ours, and the pid file is stale.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        """The pid if our process is alive; removes a stale pid file (and says so)."""
        if not self.pid_file.exists():
            return None
        text = self.pid_file.read_text().strip().splitlines()
        try:
            pid = int(text[0]) if text else -1
        except ValueError:
            pid = -1
        if pid > 0 and _is_ours(pid, self.marker):
            return pid
        logger.warning(
            "%s: stale pid file %s (pid %s is not running %s); removing it",
            self.name,
            self.pid_file,
            pid if pid > 0 else "unreadable",
            self.name,
        )
        self.pid_file.unlink(missing_ok=True)
        return None


def _is_ours(pid: int, marker: str, exec_wait_s: float = 2.0) -> bool:
    """True if ``pid`` is alive and its command line holds ``marker``.

    A process still inside exec has an empty command line: Popen returns once the old image is gone
    (its close-on-exec pipe closes), before the kernel has set the new image's arguments. Seen under
    load right after spawn; so an empty command line is "not yet", polled for ``exec_wait_s``."""
    deadline = time.monotonic() + exec_wait_s
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        if cmdline or time.monotonic() >= deadline:  # a kernel thread's stays empty: not ours
            return marker in " ".join(cmdline)
        time.sleep(0.01)


def port_owner(port: int) -> str | None:
    """Describe the process listening on TCP ``port`` ("pid 123 (java ...)"), or None if free."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "another process (run as root to see which)"
            try:
                proc = psutil.Process(conn.pid)
                cmd = " ".join(proc.cmdline())
                return f"pid {conn.pid} ({cmd[:120]}{'...' if len(cmd) > 120 else ''})"
            except psutil.NoSuchProcess:
                return f"pid {conn.pid}"
    return None


def ensure_port_free(port: int, service: str, setting: str) -> None:
    """Raise a clear error if ``port`` is taken, naming the port, the holder and the setting to change."""
    owner = port_owner(port)
    if owner:
        raise FeatureCtlError(
            f"{service} cannot start: port {port} is already in use by {owner}",
            f"stop that process, or pick another port with {setting}=<port> (environment or featurectl.env)",
        )


def spawn(
    daemon: Daemon,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    nice: int = 0,
    rt_priority: int = 0,
) -> int:
    """Start ``argv`` detached (own session, output to the daemon's log) and record its pid. ``nice`` > 0
    lowers its CPU priority: the process's niceness (every thread it starts inherits it) and its
    session's autogroup's, which is what Linux weighs between sessions when autogroups are on.
    ``rt_priority`` > 0 runs its main thread real-time (``realtime_preexec``), its forks and later
    threads not: it is for a single-threaded server whose requests must not wait for a core."""
    if nice > 0 and rt_priority > 0:
        raise ValueError("a process is either niced (background) or real-time (latency-critical), not both")
    daemon.log_file.parent.mkdir(parents=True, exist_ok=True)
    daemon.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(daemon.log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            # Runs in the child after setsid, before exec: the new session's autogroup is the child's own.
            preexec_fn=(
                (lambda: _lower_priority(nice))
                if nice > 0
                else realtime_preexec(rt_priority, reset_on_fork=True)
                if rt_priority > 0
                else None
            ),
        )
    daemon.pid_file.write_text(f"{proc.pid}\n")
    if rt_priority > 0:
        warn_unless_realtime(proc.pid, daemon.name, rt_priority)
    logger.info(
        "%s: started pid %d%s, log %s",
        daemon.name,
        proc.pid,
        f" at nice {nice}" if nice else "",
        daemon.log_file,
    )
    return proc.pid


def _lower_priority(nice: int) -> None:
    os.nice(nice)
    try:  # absent on kernels without autogroups (then the niceness alone counts)
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass


# Real-time scheduling for the processes a lookup waits on (the feature server, the local Redis). On a
# host where ingest keeps every core busy, a normal-priority process waits up to tens of ms for a core
# when it wakes (measured: a 1 ms sleep overshot by 68 ms at worst, 31 times past 10 ms in 100 s; the
# same loop under SCHED_RR: 6.7 ms at worst). SCHED_RR at the lowest priority runs it as soon as it is
# runnable; the kernel's real-time throttling still leaves the other processes a share of each second.
REALTIME_FIX = (
    "run it as root, or grant CAP_SYS_NICE (`setcap cap_sys_nice+ep` on the Python or redis-server binary) "
    "or an RLIMIT_RTPRIO >= {prio} (`LimitRTPRIO={prio}` in a systemd unit, `rtprio` in "
    "/etc/security/limits.conf); or set FEATURECTL_SERVING_RT_PRIORITY=0 to keep normal scheduling"
)


def realtime_preexec(rt_priority: int, reset_on_fork: bool = False) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child SCHED_RR at ``rt_priority`` before it execs.

    Without the privilege the child keeps normal scheduling (a preexec_fn must not raise or log):
    check with ``warn_unless_realtime`` in the parent. ``reset_on_fork``: the child's forks and threads
    start with normal scheduling (Redis's AOF rewrite child and background threads are throughput work).
    """
    policy = os.SCHED_RR | (os.SCHED_RESET_ON_FORK if reset_on_fork else 0)

    def preexec() -> None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(rt_priority))

    return preexec


def is_realtime(pid: int) -> bool:
    """True if ``pid``'s main thread runs under a real-time policy (SCHED_RR or SCHED_FIFO)."""
    try:
        policy = os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK
    except OSError:
        return False
    return policy in (os.SCHED_RR, os.SCHED_FIFO)


def warn_unless_realtime(pid: int, name: str, rt_priority: int) -> bool:
    """Log a warning naming the fix if ``pid`` did not get real-time scheduling; True if it did."""
    if is_realtime(pid):
        logger.info("%s: pid %d runs SCHED_RR at priority %d (lookups first)", name, pid, rt_priority)
        return True
    logger.warning(
        "%s: pid %d runs with normal scheduling: SCHED_RR priority %d was refused (no CAP_SYS_NICE or "
        "RLIMIT_RTPRIO); under full ingest its requests can wait tens of ms for a core. Fix: %s",
        name,
        pid,
        rt_priority,
        REALTIME_FIX.format(prio=rt_priority),
    )
    return False


def make_realtime(rt_priority: int, pid: int = 0) -> bool:
    """Make every current thread of ``pid`` (0: this process) SCHED_RR at ``rt_priority``; threads they
    start later inherit it. For a running latency-critical process (a model service doing in-process
    lookups). Returns False, changing nothing more, if the privilege is missing."""
    pid = pid or os.getpid()
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(rt_priority))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError:
            return False
    return True


def make_normal(pid: int = 0) -> None:
    """Undo ``make_realtime``: every current thread of ``pid`` back to normal scheduling."""
    pid = pid or os.getpid()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop(daemon: Daemon, grace_s: float = 30.0) -> bool:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL. Returns False if it was not running."""
    pid = daemon.pid()
    if pid is None:
        return False
    logger.info("%s: stopping pid %d (SIGTERM)", daemon.name, pid)
    os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not alive(pid), grace_s, raise_on_timeout=False):
        logger.warning("%s: pid %d still running after %.0fs; sending SIGKILL", daemon.name, pid, grace_s)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10.0, raise_on_timeout=False)
    _reap(pid)
    daemon.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    # Our own children (started in this process) stay zombies until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(
    probe: Callable[[], T | bool | None],
    timeout_s: float,
    what: str = "condition",
    interval_s: float = 0.2,
    raise_on_timeout: bool = True,
    check: Callable[[], None] | None = None,
) -> T | bool | None:
    """Poll ``probe`` until it returns a truthy value or ``timeout_s`` passes.

    ``check`` runs before each probe and may raise to abort early (for example when the process
    being waited for has died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            if raise_on_timeout:
                raise FeatureCtlError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            return None
        time.sleep(interval_s)


def died_check(daemon: Daemon, pid: int) -> None:
    """Raise with the log tail if the process we are waiting for has exited."""
    if not alive(pid):
        daemon.pid_file.unlink(missing_ok=True)
        raise FeatureCtlError(
            f"{daemon.name} exited during start-up; last lines of {daemon.log_file}:\n{log_tail(daemon.log_file)}",
            f"read {daemon.log_file}",
        )


def log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
