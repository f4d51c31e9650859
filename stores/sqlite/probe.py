"""Is the online SQLite file there and readable? (``featurectl health``)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stores.sqlite.db import connect


def probe(store: Any) -> str:
    """The file it read; the driver's error when it cannot."""
    config = store.config
    path = Path(str(config.online_store.path))
    path = path if path.is_absolute() else Path(str(config.repo_path)) / path
    conn = connect(path)
    try:
        conn.execute("SELECT 1").fetchone()
    finally:
        conn.close()
    return str(path)
