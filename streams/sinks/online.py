"""The online sink for the online store feature_store.yaml declares (the choice is that file's only)."""

from __future__ import annotations

from feast import FeatureStore

from featurectl.errors import ConfigError
from onlinestore.feast_store import TYPE as SQLITE_TYPE
from streams.sinks.online_feast import FeastLayoutSink

PG_TYPE = "onlinestore.pg_store.PgVectorOnlineStore"
REDIS_TYPE = "onlinestore.redis_store.RedisOnlineStore"
VECTOR_STORES = f"{PG_TYPE} (Postgres + pgvector) or {SQLITE_TYPE}"
SUPPORTED = (
    f"{SQLITE_TYPE} (SQLite + sqlite-vec, one host), {PG_TYPE} (Postgres + pgvector), postgres, sqlite"
)


def open_online_sink(store: FeatureStore) -> FeastLayoutSink:
    """A sink writing ``store``'s online store; ConfigError naming the supported types otherwise."""
    kind = store.config.online_store.type
    if kind in ("sqlite", SQLITE_TYPE):
        from streams.sinks.online_sqlite import SqliteOnlineSink

        return SqliteOnlineSink(store)
    if kind in ("postgres", PG_TYPE):
        try:
            from streams.sinks.online_postgres import PostgresOnlineSink
        except ImportError as exc:
            raise ConfigError(
                f"the Postgres online store needs {exc.name}", "pip install -e '.[stores]'"
            ) from None
        return PostgresOnlineSink(store)
    if kind in ("redis", REDIS_TYPE):
        from streams.sinks.online_redis import RedisOnlineSink

        return RedisOnlineSink(store)
    raise ConfigError(
        f"online store type {kind!r} is not supported by the stream processor",
        f"use one of: {SUPPORTED} in feature_store.yaml",
    )
