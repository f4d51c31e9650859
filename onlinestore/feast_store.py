"""Old type name: see stores/sqlite/feast.py."""

from stores.sqlite.feast import VecSqliteOnlineStore, VecSqliteOnlineStoreConfig

__all__ = ["VecSqliteOnlineStore", "VecSqliteOnlineStoreConfig"]
