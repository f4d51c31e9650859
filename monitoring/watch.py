"""The source watch: a thread in the processor that probes the replication slot and the connector.

Every ``interval_s`` it sets the slot and connector gauges (core/metrics.py) and warns in the
log, before Postgres acts, when the slot's retained WAL passes the warning threshold (``wal_limit``):
with ``max_slot_wal_keep_size`` set, Postgres invalidates the slot at that size and the connector
has to snapshot again; without it, the disk fills. A probe that fails is logged and retried; it
never stops the processor.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from connectors.definition import ConnectorDefinition
from connectors.deploy import debezium_conninfo
from connectors.status import ConnectorStatus, SlotStatus, connector_status, slot_status
from core import metrics
from core.errors import ConfigError, FeatureCtlError
from core.settings import Settings

logger = logging.getLogger(__name__)

WARN_FRACTION = 0.8  # of max_slot_wal_keep_size: warn while there is still time to act


def wal_limit(slot: SlotStatus, threshold_bytes: int) -> int:
    """Retained WAL above which an operator must act: the configured threshold, or 80% of
    ``max_slot_wal_keep_size`` (where Postgres invalidates the slot) if that is lower."""
    if slot.max_wal_keep_bytes is None:
        return threshold_bytes
    return min(threshold_bytes, int(slot.max_wal_keep_bytes * WARN_FRACTION))


def wal_problem(slot: SlotStatus, threshold_bytes: int) -> str | None:
    """What is wrong with the slot's WAL, or None."""
    if slot.wal_status == "lost":
        return (
            f"replication slot {slot.name} was invalidated (wal_status=lost): Postgres removed WAL the "
            "connector had not read; re-deploy it with a new snapshot"
        )
    limit = wal_limit(slot, threshold_bytes)
    if slot.retained_wal_bytes < limit:
        return None
    cap = (
        f"Postgres invalidates the slot at max_slot_wal_keep_size = {_mb(slot.max_wal_keep_bytes)}"
        if slot.max_wal_keep_bytes is not None
        else "max_slot_wal_keep_size is unlimited: the disk fills"
    )
    return (
        f"replication slot {slot.name} retains {_mb(slot.retained_wal_bytes)} of WAL "
        f"(limit {_mb(limit)}; {cap}); {'active' if slot.active else 'NO consumer connected'}"
    )


def _mb(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:,.0f} MiB"


@dataclass
class SourceWatch:
    """Probes ``slot`` (as ``conninfo``) and ``connector`` (at ``connect_url``) every ``interval_s``."""

    conninfo: str | None  # None: the slot is not probed
    slot: str
    connect_url: str
    connector: str
    threshold_bytes: int
    interval_s: float = 15.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="source-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._stop.wait(self.interval_s)

    def probe(self) -> tuple[SlotStatus | None, ConnectorStatus | None]:
        """One round: set the gauges, log what needs action. Returns what it saw (None: unreachable)."""
        slot = connector = None
        try:
            if self.conninfo is not None:
                slot = slot_status(self.conninfo, self.slot)
                metrics.WATCH_UP.labels("postgres").set(1)
        except Exception as exc:  # any failure: report, keep watching
            metrics.WATCH_UP.labels("postgres").set(0)
            logger.warning("source watch: cannot read replication slot %s: %s", self.slot, exc)
        if slot is not None:
            metrics.SLOT_RETAINED_WAL.labels(slot.name).set(slot.retained_wal_bytes)
            metrics.SLOT_ACTIVE.labels(slot.name).set(1 if slot.active else 0)
            if slot.flush_lag_bytes is not None:
                metrics.SLOT_FLUSH_LAG.labels(slot.name).set(slot.flush_lag_bytes)
            if slot.safe_wal_size is not None:
                metrics.SLOT_SAFE_WAL.labels(slot.name).set(slot.safe_wal_size)
            self._warn(wal_problem(slot, self.threshold_bytes))
        try:
            connector = connector_status(self.connect_url, self.connector)
            metrics.WATCH_UP.labels("connect").set(1)
            metrics.set_state(metrics.CONNECTOR_STATE, connector.state, (connector.name,))
            for task, state in connector.tasks.items():
                metrics.set_state(metrics.CONNECTOR_TASK_STATE, state, (connector.name, str(task)))
        except FeatureCtlError as exc:
            metrics.WATCH_UP.labels("connect").set(0)
            logger.warning("source watch: cannot read connector %s: %s", self.connector, exc.problem)
        return slot, connector

    def _warn(self, problem: str | None) -> None:
        # Warn on every probe while it lasts (an operator may join late), and once when it clears.
        if problem:
            logger.warning("WAL watch: %s: resume or fix the connector (`featurectl health`)", problem)
        elif self._warned:
            logger.info("WAL watch: replication slot %s is back under its limit", self.slot)
        self._warned = problem


def source_watch(settings: Settings, definition: ConnectorDefinition) -> SourceWatch:
    """The watch of ``definition``'s slot (read as the Debezium role, which owns it) and connector.
    Without the Debezium role's password (a processor host without it) only the connector is watched."""
    try:
        conninfo: str | None = debezium_conninfo(settings)
    except ConfigError as exc:
        logger.warning(
            "source watch: not watching replication slot %s: %s", definition.slot_name, exc.problem
        )
        conninfo = None
    return SourceWatch(
        conninfo,
        definition.slot_name,
        settings.connect_rest_url,
        definition.name,
        settings.wal_retained_alert_bytes,
        settings.source_watch_interval_s,
    )
