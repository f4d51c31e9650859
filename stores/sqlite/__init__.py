"""The SQLite online store: Feast's SQLite layout plus a sqlite-vec index per embedding view.

``feast.py`` the Feast plugin; ``db.py`` connections and the bookkeeping tables; ``vectors.py`` the
vector tables; ``sink.py`` the processor's writer; ``reembed.py`` re-embedding after a model change;
``errors.py`` and ``probe.py`` its driver's errors told apart and its health probe. A file: no server.
"""

from stores.registry import OnlineStoreKind

KIND = OnlineStoreKind(
    name="sqlite",
    label="SQLite + sqlite-vec",
    types={
        "stores.sqlite.feast.VecSqliteOnlineStore": True,
        "onlinestore.feast_store.VecSqliteOnlineStore": True,  # the name before stores/ (kept working)
        "sqlite": False,  # Feast's own SQLite store: same tables, no vector index
    },
    sink="stores.sqlite.sink:SqliteOnlineSink",
    vectors="stores.sqlite.reembed:SqliteVectors",
    errors="stores.sqlite.errors:transient",
    probe="stores.sqlite.probe:probe",
    aggregating=("stores.sqlite.feast.VecSqliteOnlineStore", "onlinestore.feast_store.VecSqliteOnlineStore"),
    many_hosts=False,
    parallel_writes=False,  # its writers take turns on the file's lock: workers add no throughput
    transactions=True,
    atomic_source_transactions=True,
)
