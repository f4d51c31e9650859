"""The Postgres online store: Feast's ``postgres`` layout plus pgvector HNSW indexes, for many hosts.

``feast.py`` the Feast plugin; ``tables.py`` the bookkeeping tables and the SQL guard; ``sink.py`` the
processor's writer; ``reembed.py`` re-embedding after a model change. The local service is started by
stack/online_postgres.py.
"""

from stores.registry import OnlineStoreKind

KIND = OnlineStoreKind(
    name="postgres",
    label="Postgres + pgvector, any number of hosts",
    types={
        "stores.postgres.feast.PgVectorOnlineStore": True,
        "onlinestore.pg_store.PgVectorOnlineStore": True,  # the name before stores/ (kept working)
        "postgres": False,  # Feast's own Postgres store: same tables, vectors only if vector_enabled
    },
    sink="stores.postgres.sink:PostgresOnlineSink",
    vectors="stores.postgres.reembed:PostgresVectors",
    hosts="any number of hosts",
    errors="stores.postgres.errors:transient",
    probe="stores.postgres.probe:probe",
    aggregating=("stores.postgres.feast.PgVectorOnlineStore", "onlinestore.pg_store.PgVectorOnlineStore"),
    extras=("stores",),
)
