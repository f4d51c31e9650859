"""Is the online Redis answering, with the repository's settings? (``featurectl health``)"""

from __future__ import annotations

from typing import Any

from stores.redis.feast import RedisOnlineStore


def probe(store: Any) -> str:
    """Where it answered; redis-py's error when it does not."""
    client = RedisOnlineStore()._get_client(store.config.online_store)
    client.ping()
    info = client.connection_pool.connection_kwargs
    return f"{info.get('host')}:{info.get('port')} db {info.get('db', 0)}"
