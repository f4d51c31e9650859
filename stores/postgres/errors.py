"""psycopg's errors, told apart: the online Postgres being away or busy is transient, a value it refuses is
the record's fault.

Transient: the connection classes of SQLSTATE (08: refused, lost, reset), 53 (disk full, out of memory,
too many connections), 57 (admin or crash shutdown, cannot connect now, a query cancelled by a timeout), 58
(system errors), 40 (deadlock, serialization failure: rolled back whole), a read-only transaction (25006: a
failover left us on a standby) and a closed connection (psycopg's InterfaceError, OperationalError with no
SQLSTATE). Terminal: everything else psycopg raises (a value out of range, a constraint)."""

from __future__ import annotations

_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_STATES = {"25006"}  # read_only_sql_transaction


def transient(exc: BaseException) -> bool | None:
    """True when the store is down, restarting, failing over or overloaded; False for a record's fault;
    None when psycopg did not raise ``exc``."""
    try:
        import psycopg
    except ImportError:
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""
    if state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
        return True
    # No SQLSTATE: the client's own view (connection refused or lost, a closed connection, a timeout).
    return not state and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
