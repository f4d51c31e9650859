"""A real-time process's connection to the local Postgres store gets a real-time backend (stores/postgres/
priority.py): the feature server's lookups do not wait behind ingest for a core in Postgres either. Only that
connection's backend; a process at normal priority changes nothing. Each case runs in a child process (the test
session itself stays at normal priority)."""

from __future__ import annotations

import os
import subprocess
import sys

from core.settings import PROJECT_ROOT
from tests.conftest import LocalStore

CHILD = """
import os, sys, psycopg
from stores.postgres.priority import share_priority
if sys.argv[2] == "rt":
    os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
lookups = psycopg.connect(sys.argv[1])
other = psycopg.connect(sys.argv[1])
share_priority(lookups)
policy = lambda c: os.sched_getscheduler(c.info.backend_pid) & ~os.SCHED_RESET_ON_FORK
print(policy(lookups), policy(other))
"""


def _policies(conninfo: str, mode: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, conninfo, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lookups, other = done.stdout.split()
    return int(lookups), int(other)


def test_a_realtime_process_gets_a_realtime_backend(local_postgres: LocalStore) -> None:
    conninfo = local_postgres.server.store_conninfo()
    assert _policies(conninfo, "rt") == (os.SCHED_RR, os.SCHED_OTHER)  # CI runs as root: the privilege is there
    assert _policies(conninfo, "normal") == (os.SCHED_OTHER, os.SCHED_OTHER)
