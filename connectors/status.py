"""Probes of the capture side: the connector's replication slot in Postgres and its state in Connect.

A slot keeps Postgres from removing WAL its consumer has not confirmed. A paused, failed or deleted
connector therefore makes WAL pile up until the disk fills (or, with ``max_slot_wal_keep_size`` set,
until Postgres invalidates the slot, and the connector must snapshot again). Both probes are
read-only and cheap (one catalog query, one REST call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from connectors.client import ConnectClient

_SLOT_SQL = """
SELECT slot_name, active,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
       wal_status, safe_wal_size,
       (SELECT setting::bigint * 1024 * 1024 FROM pg_settings WHERE name = 'max_slot_wal_keep_size')
FROM pg_replication_slots WHERE slot_name = %s
"""


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """One replication slot, as ``pg_replication_slots`` shows it."""

    name: str
    active: bool
    retained_wal_bytes: int  # pg_current_wal_lsn() - restart_lsn: WAL Postgres keeps for the slot
    flush_lag_bytes: int | None  # pg_current_wal_lsn() - confirmed_flush_lsn
    wal_status: str | None  # reserved, extended, unreserved, lost (Postgres 13+)
    safe_wal_size: int | None  # bytes left before invalidation; None when max_slot_wal_keep_size = -1
    max_wal_keep_bytes: int | None  # max_slot_wal_keep_size in bytes; None when unlimited (-1)


def slot_status(conninfo: str, slot: str) -> SlotStatus | None:
    """The slot's status, or None if Postgres has no slot of that name. Raises psycopg.Error."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(_SLOT_SQL, (slot,)).fetchone()
    if row is None:
        return None
    name, active, retained, lag, wal_status, safe, keep = row
    return SlotStatus(
        name,
        bool(active),
        int(retained or 0),
        None if lag is None else int(lag),
        wal_status,
        None if safe is None else int(safe),
        None if keep is None or keep < 0 else int(keep),
    )


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    """A connector's state and its tasks' states, as Connect's REST API reports them."""

    name: str
    state: str  # RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING; MISSING if not deployed
    tasks: dict[int, str]
    trace: str | None = None  # the first failed task's (or the connector's) error, if any

    @property
    def running(self) -> bool:
        return (
            self.state == "RUNNING" and bool(self.tasks) and all(s == "RUNNING" for s in self.tasks.values())
        )


def connector_status(connect_url: str, name: str) -> ConnectorStatus:
    """The connector's status (MISSING if Connect does not know it). Raises FeatureCtlError if Connect
    cannot be reached."""
    client = ConnectClient(connect_url, timeout_s=5.0)
    if not client.exists(name):
        return ConnectorStatus(name, "MISSING", {})
    raw: dict[str, Any] = client.status(name)
    tasks = {int(t["id"]): str(t["state"]) for t in raw.get("tasks", [])}
    traces = [t.get("trace") for t in raw.get("tasks", []) if t.get("trace")]
    trace = raw["connector"].get("trace") or (traces[0] if traces else None)
    return ConnectorStatus(name, str(raw["connector"]["state"]), tasks, trace)
