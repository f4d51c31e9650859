"""The offline history's storage failing in the middle of ingest, then healing: the disk full (a tmpfs of its
own, filled), or the Delta log unwritable (its directory made immutable: root too is refused). The processor
waits, it does not exit and dead-letters nothing, and once the storage heals the history has every change,
in order, and the online store equals Postgres; `featurectl health` names the history while it cannot be
written. (The writer turns the storage's errors into a TransientError: stores/history/delta.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor import insert_customer
from tests.integration.test_processor_recovery import (
    Workload,
    assert_offline_has_every_change,
    assert_online_equals_postgres,
)
from tests.integration.test_store_outage import health_env

WAITING = "cannot be written"  # stores/history/delta.py's refusal, logged by the processor as it waits


@contextlib.contextmanager
def on_tmpfs(offline: Path, size: str) -> Iterator[Path]:
    """``offline`` (the histories, as `feast apply` made them) moved onto a tmpfs of ``size`` of its own."""
    keep = offline.with_name("offline.before")
    offline.rename(keep)
    offline.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(offline)], check=True)
    try:
        shutil.copytree(keep, offline, dirs_exist_ok=True)
        yield offline
    finally:
        subprocess.run(["umount", "-l", str(offline)], check=False)


def fill(directory: Path) -> Path:
    """A file taking every free byte of ``directory``'s filesystem."""
    filler = directory / "filler"
    # Unbuffered, and the suppression outside the file: a buffered file's close flushes what the full disk
    # refused once more and raises ENOSPC past the suppression (seen in CI).
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as fh:
        while True:
            fh.write(b"\0" * 65536)
    return filler


@contextlib.contextmanager
def immutable(logs: list[Path]) -> Iterator[None]:
    """The Delta logs made immutable (chattr +i): no new commit file, whoever asks."""
    subprocess.run(["chattr", "+i", *map(str, logs)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, logs)], check=False)


def _running(stack: StackHandle, platform: Platform) -> Any:
    """The processor started and through a first change (so the fault meets it mid-stream, not at start)."""
    processor = platform.start_processor("p")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        first = insert_customer(conn)

    def written() -> bool:
        return platform.online("customer_profile", "customer_id", [first], ["segment"])["segment"] == [
            "standard"
        ]

    wait_until(written, 120, "the processor to write a first change", lambda: platform.log("p")[-3000:])
    return processor


def _workload(stack: StackHandle) -> Workload:
    """The changes that meet the fault: started after it."""
    work = Workload(stack.app, rows=200, updates=1800)
    work.start()
    return work


def _waits(stack: StackHandle, platform: Platform, processor: object) -> None:
    wait_until(lambda: WAITING in platform.log("p"), 120, "the processor to report the history unwritable",
               lambda: platform.log("p")[-3000:])  # fmt: skip
    assert processor.poll() is None, platform.log("p")[-3000:]  # type: ignore[attr-defined]
    check = history_check(stack, platform)
    assert check["status"] == "fail" and "cannot be written" in check["summary"], check


def history_check(stack: StackHandle, platform: Platform) -> dict[str, Any]:
    """`featurectl health`'s "offline history" line."""
    health = cli("health", "--file", str(platform.definition.path), "--json", env=health_env(stack, platform))
    (check,) = [c for c in json.loads(health.stdout)["checks"] if c["name"] == "offline history"]
    return check  # type: ignore[no-any-return]


def _healed(stack: StackHandle, platform: Platform, processor: object, work: Workload) -> None:
    work.join(300)
    assert work.error is None and not work.is_alive()
    assert_online_equals_postgres(stack, platform, work)
    assert_offline_has_every_change(platform, work)
    assert processor.poll() is None, platform.log("p")[-3000:]  # type: ignore[attr-defined]
    assert platform.dead_letters() == []  # a full disk is no record's fault
    assert "processor stopped after" not in platform.log("p")
    assert history_check(stack, platform)["status"] == "ok"


def test_a_full_disk_under_the_history_is_a_wait(stack: StackHandle, platform: Platform) -> None:
    with on_tmpfs(platform.repo / "data" / "offline", "64m") as offline:
        processor = _running(stack, platform)
        filler = fill(offline)
        work = _workload(stack)
        _waits(stack, platform, processor)
        filler.unlink()  # space again
        _healed(stack, platform, processor, work)
        platform.stop_all()


def test_an_unwritable_delta_log_is_a_wait(stack: StackHandle, platform: Platform) -> None:
    logs = sorted((platform.repo / "data" / "offline").glob("*/_delta_log"))
    assert logs, "feast apply made no Delta history"
    processor = _running(stack, platform)
    with immutable(logs):
        work = _workload(stack)
        _waits(stack, platform, processor)
    _healed(stack, platform, processor, work)


@pytest.fixture(autouse=True)
def _root_only() -> None:
    assert os.geteuid() == 0, "mounting a tmpfs and chattr need root (the CI runs as root)"
