"""SQLite connections with the sqlite-vec extension loaded, for every reader and writer of the online store.

The stdlib ``sqlite3`` of many Python builds (pyenv's here, python.org's on macOS) cannot load
extensions, so the SQLite bundled by ``pysqlite3-binary`` is used where it is installed. Every
process that touches the online store opens it through here, so a process never mixes two SQLite
libraries on one file (their POSIX locks would not see each other).
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlite_vec

# Feast's adapters: its SQLite store writes event timestamps as epoch seconds and reads them back.
from feast.infra.online_stores.sqlite import (
    adapt_date_iso,
    adapt_datetime_epoch,
    convert_date,
    convert_datetime,
    convert_timestamp,
)

from core.errors import ConfigError


def _driver() -> ModuleType:
    try:
        from pysqlite3 import dbapi2  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return sqlite3
    return dbapi2  # type: ignore[no-any-return,unused-ignore]


DRIVER = _driver()
DRIVER.register_adapter(date, adapt_date_iso)
DRIVER.register_adapter(datetime, adapt_datetime_epoch)
DRIVER.register_converter("date", convert_date)
DRIVER.register_converter("datetime", convert_datetime)
DRIVER.register_converter("timestamp", convert_timestamp)
OperationalError: type[Exception] = DRIVER.OperationalError


def connect(path: Path | str, timeout: float = 30.0, convert: bool = True) -> Any:
    """A connection to the online store with sqlite-vec loaded; WAL so readers never block the writer.
    ``convert``: columns declared ``timestamp`` come back as datetimes (Feast's converters), else as stored."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = DRIVER.connect(
        str(path),
        timeout=timeout,
        detect_types=DRIVER.PARSE_DECLTYPES if convert else 0,
        check_same_thread=False,
    )
    if not hasattr(conn, "enable_load_extension"):
        conn.close()
        raise ConfigError(
            f"this Python's sqlite3 (SQLite {DRIVER.sqlite_version}) cannot load extensions, "
            "so the online store's vector index (sqlite-vec) cannot be opened",
            "pip install pysqlite3-binary (Linux), or use a Python built with loadable SQLite extensions",
        )
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


VERSIONS = "featurectl_versions"
BARRIERS = "featurectl_barriers"
FENCES = "featurectl_fences"


def ensure_versions_table(conn: Any) -> None:
    """The version (stores/ordering.py) of the last change applied to each entity of each view, deletes included."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSIONS} (view TEXT NOT NULL, entity_key BLOB NOT NULL, "
        "version INTEGER NOT NULL, version_minor INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL, "
        "join_keys TEXT NOT NULL, PRIMARY KEY (view, entity_key))"
    )
    # A TRUNCATE per view: rows older than it are refused (stores/ordering.py).
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {BARRIERS} (view TEXT PRIMARY KEY, version INTEGER NOT NULL, "
        "version_minor INTEGER NOT NULL)"
    )
    # The epoch of each partition's current owner (streams/fencing.py).
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {FENCES} (topic TEXT NOT NULL, partition INTEGER NOT NULL, "
        "epoch INTEGER NOT NULL, owner TEXT NOT NULL, claimed_at TEXT NOT NULL, PRIMARY KEY (topic, partition))"
    )
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({VERSIONS})")}
    if "version_minor" not in columns:  # a store written before versions had two parts
        conn.execute(f"ALTER TABLE {VERSIONS} ADD COLUMN version_minor INTEGER NOT NULL DEFAULT 0")
    if "event_us" not in columns:  # commit time of the stored change: detects a source that went back
        conn.execute(f"ALTER TABLE {VERSIONS} ADD COLUMN event_us INTEGER")


CONTRIBUTIONS = "featurectl_contributions"


def ensure_contributions_table(conn: Any) -> None:
    """Aggregation views' contributions (aggregations/rows.py): one per source row, found by key and time."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CONTRIBUTIONS} (view TEXT NOT NULL, source_row TEXT NOT NULL, agg_key TEXT, "
        "event_us INTEGER, version INTEGER NOT NULL, version_minor INTEGER NOT NULL, vals TEXT NOT NULL, "
        "PRIMARY KEY (view, source_row))"
    )
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {CONTRIBUTIONS}_by_key ON {CONTRIBUTIONS} (view, agg_key, event_us)"
    )
