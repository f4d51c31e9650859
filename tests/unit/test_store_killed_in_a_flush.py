"""A store's server killed with SIGKILL after a flush began (inside its transaction, before its writes): the
flush fails with an error the processor waits on (transient, never a dead letter), the sink can be discarded,
once the server is back the same batch is written whole, as the processor re-reads it, and a reader connected
before the restart answers its first lookup after it (the Postgres plugin's connection used to fail it once)
(tests/integration/test_store_outage.py has the processor itself through a kill at a random moment).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import psutil
import pytest

from stores.registry import kinds, open_online_sink
from streams.faults import is_transient
from tests.conftest import LocalStore
from tests.unit.test_sinks import online, row

SERVED = [k.name for k in kinds() if k.local is not None]


def kill(local: LocalStore) -> None:
    """The server's whole process group (a postmaster and its backends), as a host crash would."""
    pid = local.server.pid()
    assert pid is not None
    group = os.getpgid(pid)
    members = [p for p in psutil.process_iter() if _in(p, group)]
    os.killpg(group, signal.SIGKILL)
    psutil.wait_procs(members, timeout=30)


def _in(proc: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(proc.pid) == group
    except (ProcessLookupError, PermissionError):
        return False


@pytest.mark.parametrize("name", SERVED)
def test_a_store_killed_inside_a_flush_fails_it_transiently_and_the_retry_writes_it(
    name: str, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue(f"{name}_store")
    local: LocalStore = request.getfixturevalue(f"local_{name}")
    sink: Any = open_online_sink(store)
    batch = [row(cid, 10 + cid, segment=f"s{cid}") for cid in range(1, 21)]
    online(
        store, 1
    )  # a reader (a model service) connected before the restart: its first read after must answer
    write = sink._write

    def dying(*args: Any, **kwargs: Any) -> Any:  # the flush began: versions read, decision made
        kill(local)
        return write(*args, **kwargs)

    sink._write = dying
    try:
        sink.add(batch)
        with pytest.raises(Exception) as failed:
            sink.flush()
        assert is_transient(failed.value), f"{type(failed.value).__name__}: {failed.value}"
        sink.discard()  # what the processor does with a failed batch: never raises
    finally:
        sink._write = write
        local.server.start()
    deadline = time.monotonic() + 120
    while True:  # the processor's retries: the same batch, re-read, until the store answers again
        try:
            sink.add(batch)
            sink.flush()
            break
        except Exception as exc:
            assert is_transient(exc), f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                sink.discard()
            assert time.monotonic() < deadline, f"the store did not come back: {exc}"
            time.sleep(1)
    sink.close()
    got = online(store, *range(1, 21))
    assert got["segment"] == [f"s{cid}" for cid in range(1, 21)]
    assert got["credit_limit"] == [float(10 + cid) for cid in range(1, 21)]
