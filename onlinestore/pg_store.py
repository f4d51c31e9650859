"""Old type name: see stores/postgres/feast.py."""

from stores.postgres.feast import PgVectorOnlineStore, PgVectorOnlineStoreConfig

__all__ = ["PgVectorOnlineStore", "PgVectorOnlineStoreConfig"]
