"""Lookups first in a Postgres on the same host: a real-time process's connection gets a real-time backend.

`featurectl serve` runs real-time (settings.serving_rt_priority, core/procs.py) so that a lookup never waits
behind ingest for a core; the local Redis a lookup waits on runs real-time for the same reason
(stores/redis/server.py). A lookup on the Postgres store also waits on its backend, a process of its own that
ran at normal priority beside the processor's writes. When the process opening a connection is real-time and
the connection's backend runs on this host, that backend is made real-time at the same priority (its forks
not). Only that backend: the processor's, autovacuum's and every other stay as they are.

The backend's pid comes from the server (``pg_backend_pid``); it is trusted only when this host's process with
that pid is a ``postgres`` process holding the other end of this very connection's socket (a server in a
container reports pids of its own namespace). Without the privilege (CAP_SYS_NICE), with a server elsewhere,
or in a process that is not real-time, nothing changes.
"""

from __future__ import annotations

import logging
import os
import socket

import psutil
from psycopg import Connection

logger = logging.getLogger(__name__)


def _realtime_priority() -> int:
    """This process's real-time priority, 0 if it runs with normal scheduling."""
    if os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK not in (os.SCHED_RR, os.SCHED_FIFO):
        return 0
    return os.sched_getparam(0).sched_priority


def _local_backend(conn: Connection) -> int | None:
    """The pid of ``conn``'s backend if it is a process on this host at the other end of its socket."""
    pid = conn.info.backend_pid
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except OSError:
        return None
    try:
        ours = sock.getsockname()
    finally:
        sock.close()
    try:
        backend = psutil.Process(pid)
        if backend.name() != "postgres":
            return None
        if sock.family == socket.AF_UNIX:
            return pid  # a Unix socket is this host's by definition
        peers = {c.raddr for c in backend.net_connections(kind="tcp") if c.raddr}
    except (psutil.Error, OSError):
        return None
    return pid if any((p.ip, p.port) == ours[:2] for p in peers) else None


def share_priority(conn: Connection) -> None:
    """Run ``conn``'s backend real-time at this process's priority, if this process is real-time and the backend
    is on this host (see the module docstring); otherwise leave it."""
    priority = _realtime_priority()
    if priority <= 0:
        return
    pid = _local_backend(conn)
    if pid is None:
        return
    try:
        os.sched_setscheduler(pid, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
        logger.info("postgres backend %d of this lookup connection runs SCHED_RR at %d", pid, priority)
    except OSError as exc:
        logger.info("postgres backend %d keeps normal scheduling (%s)", pid, exc.strerror)
