"""``process --workers N``'s supervisor (streams/workers.py), with real processes running small targets:
workers join together, a killed worker comes back while the others carry on, a failing one stops them all,
and a stop lets each finish."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from streams.workers import Workers
from tests.integration.helpers import wait_until


def _worker(folder: Path, index: int, ready: Callable[[], None], stop: threading.Event) -> None:
    """Loads (worker 1 slowly), marks when it joined, runs until SIGTERM, marks that it stopped."""
    (folder / f"loading-{index}-{os.getpid()}").write_text(str(time.time()))
    time.sleep(1.5 if index == 1 else 0.0)
    (folder / f"loaded-{index}-{os.getpid()}").write_text(str(time.time()))
    ready()
    (folder / f"joined-{index}-{os.getpid()}").write_text(str(time.time()))
    stop.wait()
    (folder / f"stopped-{index}-{os.getpid()}").write_text("")


def _failing_worker(folder: Path, index: int, ready: Callable[[], None], stop: threading.Event) -> None:
    if index == 2:
        ready()
        raise SystemExit(3)
    _worker(folder, index, ready, stop)


@pytest.fixture
def supervised() -> Iterator[list[tuple[Workers, threading.Thread, list[int]]]]:
    """Runs ``Workers.wait`` in a thread; whatever a test left running is stopped at the end."""
    running: list[tuple[Workers, threading.Thread, list[int]]] = []
    yield running
    for workers, thread, _ in running:
        workers.stop()
        thread.join(30)


def start(workers: Workers, running: list[tuple[Workers, threading.Thread, list[int]]]) -> list[int]:
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(workers.wait(0.05)), daemon=True)
    workers.start()
    thread.start()
    running.append((workers, thread, status))
    return status


def marks(folder: Path, kind: str) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}
    for f in folder.glob(f"{kind}-*"):
        found.setdefault(int(f.name.split("-")[1]), []).append(f.stat().st_mtime)
    return found


def test_workers_join_together_and_a_stop_lets_each_finish(tmp_path: Path, supervised: list) -> None:  # type: ignore[type-arg]
    workers = Workers(partial(_worker, tmp_path), 3)
    status = start(workers, supervised)
    joined = wait_until(lambda: j if len(j := marks(tmp_path, "joined")) == 3 else None, 60, "3 joined")
    loaded = marks(tmp_path, "loaded")
    # The slow loader (worker 1) held the others back: nobody joined before everybody had loaded.
    assert min(min(t) for t in joined.values()) >= max(max(t) for t in loaded.values())
    workers.stop()
    wait_until(lambda: status or None, 30, "the supervisor to return")
    assert status == [0]
    assert sorted(marks(tmp_path, "stopped")) == [0, 1, 2]  # each finished its work before exiting


def test_a_killed_worker_is_started_again_while_the_others_carry_on(tmp_path: Path, supervised: list) -> None:  # type: ignore[type-arg]
    workers = Workers(partial(_worker, tmp_path), 2)
    start(workers, supervised)
    wait_until(lambda: len(marks(tmp_path, "joined")) == 2, 60, "both joined")
    first = workers.pids
    assert first[0] is not None
    os.kill(first[0], signal.SIGKILL)
    again = wait_until(
        lambda: p if (p := workers.pids)[0] not in (None, first[0]) else None,
        60,
        "worker 0 to be started again",
    )
    assert again[1] == first[1]  # the other was left alone
    wait_until(lambda: len(marks(tmp_path, "joined").get(0, [])) == 2, 60, "the new worker 0 to join")
    assert workers.restarts == 1


def test_a_worker_that_fails_stops_them_all_with_its_status(tmp_path: Path, supervised: list) -> None:  # type: ignore[type-arg]
    workers = Workers(partial(_failing_worker, tmp_path), 3)
    status = start(workers, supervised)
    wait_until(lambda: status or None, 60, "the supervisor to return")
    assert status == [3]
    assert sorted(marks(tmp_path, "stopped")) == [0, 1]  # the others were stopped cleanly, not killed
    assert workers.pids == [None, None, None]


def test_a_worker_asked_to_stop_while_it_still_loads_finishes_cleanly(
    tmp_path: Path, supervised: list
) -> None:  # type: ignore[type-arg]
    workers = Workers(partial(_worker, tmp_path), 2)
    status = start(workers, supervised)
    wait_until(lambda: 1 in marks(tmp_path, "loading"), 60, "worker 1 to be loading")
    assert 1 not in marks(tmp_path, "loaded")
    workers.stop()  # before the fix, SIGTERM's default action killed worker 1 mid-load, unlogged
    wait_until(lambda: status or None, 30, "the supervisor to return")
    assert status == [0]
    assert sorted(marks(tmp_path, "stopped")) == [0, 1]


def test_a_worker_that_exits_without_being_asked_to_is_started_again(
    tmp_path: Path, supervised: list
) -> None:  # type: ignore[type-arg]
    workers = Workers(partial(_worker, tmp_path), 2)
    start(workers, supervised)
    wait_until(lambda: len(marks(tmp_path, "joined")) == 2, 60, "both joined")
    first = workers.pids
    assert first[1] is not None
    os.kill(first[1], signal.SIGTERM)  # someone stopped this one worker alone: it exits 0
    wait_until(lambda: marks(tmp_path, "stopped").get(1), 30, "worker 1 to stop")
    wait_until(lambda: len(marks(tmp_path, "joined").get(1, [])) == 2, 60, "a new worker 1 to join")
    assert workers.restarts == 1 and workers.pids[0] == first[0]


def test_workers_stopped_while_their_interpreters_start_still_finish_cleanly(
    tmp_path: Path, supervised: list
) -> None:  # type: ignore[type-arg]
    """A stop right after the start reaches workers before their handler exists (the interpreter is still
    importing): each must still run, see the stop and leave cleanly, not die of the signal unlogged."""
    workers = Workers(partial(_worker, tmp_path), 2)
    status = start(workers, supervised)
    workers.stop()
    wait_until(lambda: status or None, 60, "the supervisor to return")
    assert status == [0]
    assert sorted(marks(tmp_path, "stopped")) == [0, 1]
