"""An online store killed with SIGKILL in the middle of ingest and started again: the processor waits for it
(it does not exit), dead-letters nothing for the outage, and the store ends equal to Postgres.

Before stores/<name>/errors.py, psycopg's "the connection is lost" raised out of the rollback and stopped
the processor, and redis-py's ConnectionError (not Python's builtin) made every record of the batch a dead
letter. The whole server is killed (its process group: the postmaster and its backends, as a host crash).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

import psutil
import pytest

from stores.registry import kinds
from tests.conftest import LocalStore
from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor_recovery import (
    Workload,
    assert_offline_has_every_change,
    assert_online_equals_postgres,
)

WAITING = "the store is not reachable"


def _killer(store: str, request: pytest.FixtureRequest) -> tuple[Callable[[], None], Callable[[], None]]:
    """(kill the store's whole server with SIGKILL, start it again) for the session's ``store``."""
    local: LocalStore = request.getfixturevalue(f"local_{store}")
    pid, start = local.server.pid, local.server.start

    def kill() -> None:
        server = pid()
        assert server is not None
        group = os.getpgid(server)
        members = [p for p in psutil.process_iter() if _in_group(p, group)]
        os.killpg(group, signal.SIGKILL)
        psutil.wait_procs(
            members, timeout=30
        )  # every backend gone: the restart finds no shared memory in use

    return kill, start


def _in_group(proc: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(proc.pid) == group
    except (ProcessLookupError, PermissionError):
        return False


# Every store with a server of its own (SQLite is a file: its "outage" is a full or unwritable disk).
SERVED = [k.name for k in kinds() if k.local is not None]


@pytest.mark.parametrize("platform", SERVED, indirect=True)
def test_a_store_killed_mid_ingest_makes_the_processor_wait_and_lose_nothing(
    stack: StackHandle, platform: Platform, request: pytest.FixtureRequest
) -> None:
    kill, start = _killer(platform.online_store, request)
    processor = platform.start_processor("p")
    work = Workload(stack.app, rows=200, updates=1800)
    work.start()
    assert work.halfway.wait(120) and work.error is None

    def writing() -> bool:  # the processor is up and has written some of the workload's rows
        ids = sorted(work.expected)[:50]
        return any(
            v is not None
            for v in platform.online("customer_profile", "customer_id", ids, ["credit_limit"])["credit_limit"]
        )

    wait_until(writing, 120, "the processor to write the first rows", lambda: platform.log("p")[-3000:])
    kill()
    try:
        # The processor meets the outage (a batch it cannot write) and says it waits.
        wait_until(lambda: WAITING in platform.log("p"), 120, "the processor to report the store unreachable",
                   lambda: platform.log("p")[-3000:])  # fmt: skip
        assert processor.poll() is None, platform.log("p")[-3000:]
        # health fails, naming the store that does not answer
        health = cli(
            "health", "--file", str(platform.definition.path), "--json", env=health_env(stack, platform)
        )
        online = [c for c in json.loads(health.stdout)["checks"] if c["name"] == "online store"]
        assert health.returncode == 1 and online and online[0]["status"] == "fail", health.stdout[-3000:]
        assert "not answering" in online[0]["summary"], online
    finally:
        start()
    work.join(300)
    assert work.error is None and not work.is_alive()
    assert_online_equals_postgres(stack, platform, work)
    assert_offline_has_every_change(platform, work)
    assert processor.poll() is None, platform.log("p")[-3000:]  # waited, never exited
    assert platform.dead_letters() == []  # an outage is no record's fault
    assert "processor stopped after" not in platform.log("p")
    health = cli("health", "--file", str(platform.definition.path), "--json", env=health_env(stack, platform))
    (online,) = [c for c in json.loads(health.stdout)["checks"] if c["name"] == "online store"]
    assert online["status"] == "ok", online


def health_env(stack: StackHandle, platform: Platform) -> dict[str, str]:
    return {
        **platform.env,
        "FEATURECTL_DATA_DIR": str(platform.root / "ops"),
        **{
            f"FEATURECTL_{f.upper()}": stack.settings.require_secret(f)
            for f in ("pg_app_password", "debezium_password")
        },
    }
