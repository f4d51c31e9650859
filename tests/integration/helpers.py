"""Helpers for integration tests: run the CLI, unique names, read Kafka until a condition holds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from connectors.client import ConnectClient
from connectors.definition import ConnectorDefinition
from core.settings import PROJECT_ROOT, Settings
from streams.events import ChangeEvent
from streams.tail import tail


@dataclass
class Capture:
    """A connector of its own over tables of its own: unique name, slot, publication and topics."""

    definition: ConnectorDefinition
    names: dict[str, str]  # logical name in the test -> unique table name in Postgres

    def table(self, name: str) -> str:
        return self.names[name]

    def topic(self, name: str) -> str:
        return self.definition.topic_for(f"public.{self.names[name]}")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``featurectl`` as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-c", "from featurectl.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=PROJECT_ROOT,
    )


def cli_background(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``featurectl`` in the background, as a user would, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from featurectl.cli import main; main()", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def read_until(
    settings: Settings,
    topics: list[str],
    done: Callable[[list[ChangeEvent]], bool],
    timeout_s: float = 60,
) -> list[ChangeEvent]:
    """Consume ``topics`` from the start until ``done(events)`` holds; fail with what arrived if not."""
    events: list[ChangeEvent] = []
    for event in tail(settings.kafka_client(), topics, idle_timeout_s=None, timeout_s=timeout_s):
        events.append(event)
        if done(events):
            return events
    if done(events):
        return events
    summary = [(e.op, e.key, (e.after or {}).get("v")) for e in events][-30:]
    raise AssertionError(f"condition not met within {timeout_s}s; {len(events)} events, last: {summary}")


def wait_connector_running(settings: Settings, name: str, timeout_s: float = 120) -> None:
    ConnectClient(settings.connect_rest_url).wait_state(name, "RUNNING", timeout_s)


def wait_until(
    probe: Callable[[], Any],
    timeout_s: float = 30.0,
    what: str = "condition",
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the last value at the deadline, and
    with what ``context()`` says then (the state a probe's falsy answer hides: logs, members)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    said = f"\n{context()}" if context else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}{said}")


def history_rows(platform_repo: Path, view: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """A view's offline history rows as readers see them; [] while no history file is in place yet.

    (A directory holding only a file being written, a dot-file readers skip, has no schema to select from.)
    """
    path = platform_repo / "data" / "offline" / view
    if (path / "_delta_log").is_dir():  # a Delta table: its live files are the ones its log lists
        from deltalake import DeltaTable

        files = DeltaTable(str(path)).file_uris()
    else:
        files = [str(p) for p in path.glob("*.parquet") if not p.name.startswith((".", "_"))]
    if not files:
        return []
    return ds.dataset(files, format="parquet").to_table(columns=columns).to_pylist()  # type: ignore[no-any-return]
