"""SQLite's errors, told apart: a locked or busy database, a full disk or an unreadable file is transient
(sqlite3.OperationalError, or pysqlite3's when stores/sqlite/db.py picks that driver); a value it refuses
(IntegrityError, DataError) is terminal."""

from __future__ import annotations

import sqlite3


def transient(exc: BaseException) -> bool | None:
    """True for a locked, busy or unwritable database; False for SQLite's other errors; None otherwise."""
    from stores.sqlite.db import DRIVER

    if isinstance(exc, sqlite3.OperationalError | DRIVER.OperationalError):
        return True
    if isinstance(exc, sqlite3.Error | DRIVER.Error):
        return False
    return None
