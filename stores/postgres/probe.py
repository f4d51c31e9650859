"""Is the online Postgres answering, with the repository's settings? (``featurectl health``)"""

from __future__ import annotations

from typing import Any

import psycopg
from feast.infra.utils.postgres.connection_utils import _get_conn_kwargs, _get_conninfo


def probe(store: Any) -> str:
    """Where it answered; psycopg's error when it does not."""
    config = store.config.online_store
    kwargs = {**_get_conn_kwargs(config), "connect_timeout": 5}
    with psycopg.connect(_get_conninfo(config), **kwargs) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    return f"{config.host}:{config.port}/{config.database} (PostgreSQL {version and version[0]})"
