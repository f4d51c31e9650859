"""The Kafka broker killed with SIGKILL in the middle of ingest and started again: the processor keeps running
(its consumer reconnects; a commit that failed is retried with the next batch), dead-letters nothing, and the
online store ends equal to Postgres with the history holding every change. Debezium, in Kafka Connect,
resumes from its own committed source offsets (tests/integration/test_restart.py: nothing lost on capture).
"""

from __future__ import annotations

import contextlib
import os
import signal

import psutil

from tests.integration.conftest import StackHandle
from tests.integration.helpers import wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor_recovery import (
    Workload,
    assert_offline_has_every_change,
    assert_online_equals_postgres,
)


def test_the_broker_killed_mid_ingest_makes_the_processor_wait_and_lose_nothing(
    stack: StackHandle, platform: Platform
) -> None:
    processor = platform.start_processor("p")
    work = Workload(stack.app, rows=200, updates=1800)
    work.start()
    assert work.halfway.wait(120) and work.error is None

    def writing() -> bool:
        ids = sorted(work.expected)[:50]
        values = platform.online("customer_profile", "customer_id", ids, ["credit_limit"])["credit_limit"]
        return any(v is not None for v in values)

    wait_until(writing, 120, "the processor to write the first rows", lambda: platform.log("p")[-3000:])
    broker = stack.stack.kafka
    pid = broker.daemon.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(30)  # gone before it is started again on its port
    try:
        assert processor.poll() is None, platform.log("p")[-3000:]
    finally:
        broker.start()
    work.join(300)
    assert work.error is None and not work.is_alive()
    assert_online_equals_postgres(stack, platform, work)
    assert_offline_has_every_change(platform, work)
    assert processor.poll() is None, platform.log("p")[-3000:]  # waited, never exited
    assert platform.dead_letters() == []
    assert "processor stopped after" not in platform.log("p")
