"""Old type name: see stores/history/duckdb_store.py."""

from stores.history.duckdb_store import DeltaDuckDBOfflineStore, DeltaDuckDBOfflineStoreConfig

__all__ = ["DeltaDuckDBOfflineStore", "DeltaDuckDBOfflineStoreConfig"]
