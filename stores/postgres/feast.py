"""Feast's Postgres online store with an HNSW index per embedding view and model, as a Feast plugin.

feature_store.yaml selects it by import path (the rest are Feast's own ``postgres`` settings)::

    online_store:
      type: stores.postgres.feast.PgVectorOnlineStore
      host: 127.0.0.1
      port: 25433
      database: features
      user: featurestore
      password: ${FEATURECTL_ONLINE_PG_PASSWORD}
      sslmode: disable
      vector_enabled: true

The tables are Feast's, unchanged (``<project>_<view>``, one row per entity and feature, vectors in
``vector_value``), so a model service with stock Feast and ``type: postgres`` reads the same
features. What this adds:

- ``update`` (``feast apply``) also creates the processor's bookkeeping (stores/postgres/tables.py)
  and, per embedding view, a table of its distinct vectors kept by a trigger, with an HNSW index; Feast
  creates none, so its search scans every vector. (An index over every vector row lost unique vectors
  among repeated ones: stores/postgres/tables.py ``distinct_vectors_table``.) A changed model (backend, name or dimension) deletes the view's
  vectors of the old model at once, rebuilds the index for the new dimension and records the
  declaration, so vectors of two models are never stored or served together.
- ``retrieve_online_documents_v2`` takes the nearest distinct vectors from the HNSW index, then the
  entities holding them (Feast's own query groups by entity first, which no index can serve).
- ``vector_index: external``: no HNSW index; one you create on the distinct vectors (VectorChord's ``vchordrq``,
  say) answers, with ``search_settings`` set on the plugin's connections.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import psycopg
from feast import Entity, FeatureView, RepoConfig
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.postgres_online_store.postgres import (
    PostgreSQLOnlineStore,
    PostgreSQLOnlineStoreConfig,
)
from feast.infra.utils.postgres.connection_utils import _get_conn, _get_conn_kwargs, _get_conninfo
from feast.infra.utils.postgres.postgres_config import ConnectionType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from psycopg import Connection, sql
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool
from pydantic import Field, field_validator

from aggregations.spec import aggregation_view
from core.errors import ConfigError
from embeddings.spec import EmbeddingSpec, VectorField, spec_for
from stores import contributions, transactions
from stores.documents import Document, V2DocumentsOnly, in_entity_key_order, query_spec
from stores.postgres.priority import share_priority
from stores.postgres.tables import (
    MODELS,
    OPERATORS,
    TEXTS,
    distinct_vectors_table,
    distinct_vectors_type,
    drop_vector_sync,
    ensure_tables,
    external_vector_indexes,
    legacy_vector_index_name,
    vector_index_ddl,
    vector_index_name,
    vector_index_quantization,
    vector_sync_ddl,
)
from stores.ttl import ReadTtl

TYPE = "stores.postgres.feast.PgVectorOnlineStore"
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
OLD_TYPE = "onlinestore.pg_store.PgVectorOnlineStore"  # the name before stores/: onlinestore/, offlinestore/ keep it working


class PgVectorOnlineStoreConfig(PostgreSQLOnlineStoreConfig):
    """Feast's ``postgres`` online store settings; ``vector_enabled: true`` for embedding views."""

    type: Literal["stores.postgres.feast.PgVectorOnlineStore", "onlinestore.pg_store.PgVectorOnlineStore"] = (
        TYPE  # type: ignore[assignment]
    )
    hnsw_ef_search: int = Field(100, ge=1, le=1000)
    """HNSW candidates per similarity query (pgvector's ``hnsw.ef_search``; at least 2 x top_k is used):
    higher finds more of the true nearest neighbours, slower. bench/online_store_bench.py prints recall@10."""
    hnsw_m: int = Field(16, ge=2, le=100)
    """Links per node of the HNSW index (pgvector's ``m``), used when the index is created."""
    hnsw_ef_construction: int = Field(64, ge=4, le=1000)
    """Candidates while building the index (pgvector's ``ef_construction``), used when it is created."""
    vector_type: Literal["vector", "halfvec"] = "vector"
    """How the index's copy of each distinct vector is stored: ``vector`` (32-bit floats) or ``halfvec``
    (16-bit: an index ~40% smaller, scans 10-25% faster, distances to ~3 significant digits; the feature rows
    keep 32-bit vectors; docs/performance.md). A change takes effect at ``feast apply``, which rebuilds the index."""
    quantization: Literal["none", "binary"] = "none"
    """What the HNSW index navigates by: ``none``, the vectors themselves (as ``vector_type``); ``binary``, one bit
    per dimension (pgvector's ``binary_quantize``, Hamming distance), whose nearest ``rerank_candidates`` are
    then ranked by the view's exact metric on the stored vectors, so distances are exact. For memory: at a
    million 384-d vectors the index is 0.5 GB instead of 2 GB, the build 40% shorter; searches measured 7-12%
    faster at 0.01-0.02 less recall@10 at the same ``hnsw_ef_search`` (docs/performance.md). The sign bits need
    dimensions to separate vectors: for text embeddings (hundreds of dimensions), not for a handful. A change
    takes effect at ``feast apply``, which rebuilds the index."""
    rerank_candidates: int = Field(200, ge=1, le=1000)
    """With ``quantization: binary``: the nearest by Hamming distance re-ranked exactly per search (at least
    top_k; ``hnsw_ef_search`` is raised to it when lower). More finds more of the true nearest, slower. 200:
    of real sentence embeddings (all-MiniLM-L6-v2, 20,000 sentences) the 100 nearest by Hamming hold 98.4% of
    the true top-10 and the 200 nearest 99.5% (docs/performance.md)."""
    vector_index: Literal["hnsw", "external"] = "hnsw"
    """Who indexes each embedding view's distinct vectors (the table ``<table>__vectors``, column ``vector``):
    ``hnsw``, the plugin (pgvector's HNSW, the ``hnsw_*``, ``vector_type`` and ``quantization`` settings);
    ``external``, you: ``feast apply`` drops the plugin's HNSW index and creates none, and an index you create
    on that table answers the searches, e.g. VectorChord's ``vchordrq`` (IVF + RaBitQ over pgvector's types; on
    the bench's million here its step in the server took 1.3 ms against HNSW's 5.8, through Feast p99 6.3 ms;
    real text needs more lists probed, docs/performance.md). Your indexes on that table are re-created from
    their definitions whenever the plugin rebuilds it (a model or ``vector_type`` change). docs/stores.md."""
    search_settings: dict[str, str] = Field(default_factory=dict)
    """Postgres settings the plugin sets on its connections before a similarity search, for the index that
    answers it: e.g. ``vchordrq.probes: 10`` with ``vector_index: external``. Checked at ``feast apply``: a
    name this Postgres does not know (a typo, or an extension not loaded) or a value it refuses is an error
    there. ``hnsw.ef_search`` follows ``hnsw_ef_search`` unless set here."""

    @field_validator("search_settings", mode="before")
    @classmethod
    def _setting_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic names the type it wanted
        for name in value:
            if not SETTING_NAME.fullmatch(name):
                raise ValueError(
                    f"search_settings: {name!r} is not a Postgres setting name (letters, digits and _, "
                    "an extension's with its prefix: vchordrq.probes)"
                )
        # YAML reads 10 as a number and off as False: Postgres takes every value as text.
        return {name: str(v).lower() if isinstance(v, bool) else str(v) for name, v in value.items()}


def search_query(table: str, spec: EmbeddingSpec, quantization: str = "none") -> sql.Composed:
    """The similarity search over feature table ``table`` (parameters ``q``: the query vector as text, ``k``,
    ``features``, and with ``binary`` quantization ``c``, the candidates re-ranked): the k nearest distinct
    vectors, the entities holding them, their features. ``binary``: the ``c`` nearest by the sign bits'
    Hamming distance (the index's expression, stores/postgres/tables.py ``vector_index_ddl``), ranked by the
    exact metric on the stored vectors.

    The k nearest distinct vectors hold at least k entities, and the k nearest entities are among theirs.
    The field is a literal, so the planner can use the partial index on the vector hash (stores/postgres/
    tables.py ``vector_hash_index``: why a costed function and not md5 inline). The query is a ``vector``
    whatever type the distinct vectors are stored as: against ``halfvec`` Postgres casts the query (that cast
    is implicit, the other way is not), so the index answers either way. (Casting the query to ``halfvec``
    against ``vector`` rows would cast every row instead: a sequential scan.)"""
    operator, _ = OPERATORS[spec.metric]
    near = (
        "WITH cand AS (SELECT vec_hash, vector FROM {vt} ORDER BY binary_quantize(vector)::bit({dim}) <~> "
        "binary_quantize(%(q)s::vector({dim}))::bit({dim}) LIMIT %(c)s), "
        "near AS (SELECT vec_hash, vector {op} %(q)s::vector({dim}) AS distance FROM cand "
        "ORDER BY 2 LIMIT %(k)s), "
        if quantization == "binary"
        else "WITH near AS (SELECT vec_hash, vector {op} %(q)s::vector({dim}) AS distance FROM {vt} "
        "ORDER BY vector {op} %(q)s::vector({dim}) LIMIT %(k)s), "
    )
    return sql.SQL(
        near + "hits AS (SELECT f.entity_key, n.distance FROM near n JOIN {t} f ON f.feature_name = {field} "
        "AND featurectl_vector_hash(f.vector_value) = n.vec_hash ORDER BY n.distance LIMIT %(k)s) "
        "SELECT h.entity_key, h.distance, f.feature_name, f.value, f.event_ts FROM hits h "
        "JOIN {t} f ON f.entity_key = h.entity_key AND f.feature_name = ANY(%(features)s)"
    ).format(
        op=sql.SQL(operator),
        dim=sql.Literal(spec.dim),
        t=sql.Identifier(table),
        vt=sql.Identifier(distinct_vectors_table(table)),
        field=sql.Literal(spec.field),
    )


def check_search_settings(conn: Connection, settings: dict[str, str]) -> None:
    """Raise ``ConfigError`` for a ``search_settings`` name this Postgres does not know (Postgres itself keeps
    an unknown ``prefix.name`` as a placeholder that nothing reads) or a value it refuses. In a transaction the
    caller rolls back."""
    with conn.cursor() as cur:
        cur.execute("SELECT '[1]'::vector")  # loads pgvector in this session: its settings exist from then on
        for name, value in settings.items():
            try:
                cur.execute("SELECT set_config(%s, %s::text, true)", (name, str(value)))
                cur.execute("SELECT 1 FROM pg_settings WHERE name = %s", (name,))
                known = cur.fetchone() is not None
            except psycopg.Error as err:
                raise ConfigError(
                    f"online_store.search_settings: {name} = {value!r} was refused by Postgres: {err}",
                    "fix it in feature_store.yaml",
                ) from err
            if not known:
                raise ConfigError(
                    f"online_store.search_settings: {name} is not a setting of this Postgres",
                    "fix the name in feature_store.yaml, or load the extension that defines it "
                    "(shared_preload_libraries; VectorChord needs it there)",
                )


logger = logging.getLogger(__name__)


def _pool(config: Any) -> ConnectionPool:
    """Feast's connection pool, whose connections are checked on checkout: one the server dropped (a restart,
    a failover) is replaced instead of failing the call that got it (a round trip per checkout)."""
    return ConnectionPool(
        conninfo=_get_conninfo(config),
        min_size=config.min_conn,
        max_size=config.max_conn,
        open=False,
        kwargs=_get_conn_kwargs(config),
        check=ConnectionPool.check_connection,
        configure=share_priority,
    )


def _documents(rows: Any, requested_features: list[str], config: RepoConfig) -> list[Document]:
    """A search's rows (entity key, distance, feature, value, event time; one per feature of each hit) as
    Feast's documents, with ``distance``, in entity-key order (stores/documents.py)."""
    found: dict[bytes, tuple[float, datetime | None, dict[str, ValueProto]]] = {}
    for raw_key, distance, feature, value, event_ts in rows:
        held = found.setdefault(bytes(raw_key), (float(distance), event_ts, {}))
        held[2][feature] = ValueProto.FromString(bytes(value))
    results: list[Document] = []
    for key, (distance, event_ts, values) in found.items():
        row = {name: v for name, v in values.items() if name in requested_features}
        row["distance"] = ValueProto(float_val=distance)
        entity = deserialize_entity_key(key, config.entity_key_serialization_version)
        results.append((event_ts, entity, row))
    return in_entity_key_order(results)


Call = TypeVar("Call", bound=Callable[..., Any])


def once_more_if_lost(method: Call) -> Call:
    """Run ``method`` again, once, when it failed because the store's connection was lost before or during it
    (the server restarted or failed over since the last call): the first lookup after a restart answers
    instead of failing. Reads, Feast's upserts and ``update`` (its DDL is IF NOT EXISTS) are safe to repeat; a
    refused value fails as before."""

    @functools.wraps(method)
    def call(self: PgVectorOnlineStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except psycopg.OperationalError as exc:
            conn = self._conn
            if conn is None or not (conn.closed or conn.broken):
                raise
            logger.info(
                "the online store's connection was lost (%s); reconnecting", " ".join(str(exc).split())
            )
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class PgVectorOnlineStore(ReadTtl, V2DocumentsOnly, PostgreSQLOnlineStore):
    """Postgres online store whose embedding views are searched through an HNSW index."""

    def __init__(self) -> None:
        super().__init__()
        # hnsw.ef_search as last set on each connection of this store (a connection the pool replaces is new).
        self._ef_search: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()
        # search_settings as last set on each connection.
        self._settings: weakref.WeakKeyDictionary[Connection, dict[str, str]] = weakref.WeakKeyDictionary()

    @contextlib.contextmanager
    def _get_conn(self, config: RepoConfig, autocommit: bool = False) -> Iterator[Connection]:
        """Feast's connection handling, minus its check that the store type is literally ``postgres``, and
        with a failed call's transaction rolled back (Feast's leaves the shared connection unusable)."""
        if config.online_store.conn_type == ConnectionType.pool:
            if not self._conn_pool:
                self._conn_pool = _pool(config.online_store)
                self._conn_pool.open()
            connection = self._conn_pool.getconn()
            connection.set_autocommit(autocommit)
            try:
                yield connection
            finally:
                self._conn_pool.putconn(connection)
        else:
            if not self._conn or self._conn.closed or self._conn.broken:
                self._conn = _get_conn(config.online_store)
                share_priority(self._conn)  # the feature server's backend: lookups first on this host too
            elif self._conn.info.transaction_status != TransactionStatus.IDLE:
                self._conn.rollback()  # a failed call left it in a transaction: every later one would fail
            self._conn.set_autocommit(autocommit)
            try:
                yield self._conn
            except BaseException:
                # Feast's own calls leave the transaction open when a statement fails (a value Postgres
                # refuses); the next call on this shared connection must not inherit it.
                if not self._conn.closed and self._conn.info.transaction_status != TransactionStatus.IDLE:
                    self._conn.rollback()
                raise

    @once_more_if_lost  # `feast apply` through a store object that outlived a server restart (CI saw it fail once)
    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        super().update(
            config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial
        )
        versioning = config.registry.enable_online_feature_view_versioning
        settings = getattr(config.online_store, "search_settings", None)
        if settings:
            with self._get_conn(config) as conn:
                try:
                    check_search_settings(conn, settings)
                finally:
                    conn.rollback()  # set_config(..., true) lasted for the check only
        with self._get_conn(config) as conn, conn.cursor() as cur:
            try:
                ensure_tables(cur)
                for view in tables_to_keep:
                    spec = spec_for(view)
                    table = compute_table_id(config.project, view, versioning)
                    if spec is None:
                        cur.execute(drop_vector_sync(table))
                        cur.execute(f"DELETE FROM {MODELS} WHERE view = %s", (view.name,))
                        continue
                    if not config.online_store.vector_enabled:
                        raise ValueError(
                            f"feature view {view.name} declares an embedding, but the online store has no vectors: "
                            "set `vector_enabled: true` under online_store in feature_store.yaml"
                        )
                    self._declare(cur, table, spec, config.online_store)
                for view in tables_to_delete:
                    cur.execute(drop_vector_sync(compute_table_id(config.project, view, versioning), False))
                    cur.execute(f"DELETE FROM {MODELS} WHERE view = %s", (view.name,))
                    cur.execute(f"DELETE FROM {TEXTS} WHERE view = %s", (view.name,))
                    cur.execute(f"DELETE FROM {contributions.TABLE} WHERE view = %s", (view.name,))
                conn.commit()
            except BaseException:
                conn.rollback()  # the store's connection is reused: not left in a failed transaction
                raise

    @once_more_if_lost
    def online_write_batch(self, *args: Any, **kwargs: Any) -> None:
        """Feast's write, once more on a fresh connection if the store restarted since the last call."""
        super().online_write_batch(*args, **kwargs)

    @once_more_if_lost
    @once_more_if_lost
    def release_position(self, config: RepoConfig) -> int | None:
        """Where the processor's releases of source transactions stand (stores/transactions.py): a reader that
        finds it equal before and after several reads saw no release between them (serving/lookup.py); -1
        before the first."""
        with self._get_conn(config, autocommit=True) as conn, conn.cursor() as cur:
            try:
                cur.execute(transactions.RELEASE_POSITION)
            except psycopg.errors.UndefinedTable:  # no processor has written here yet
                return -1
            row = cur.fetchone()
        return -1 if row is None else int(row[0])

    def read_serialized(
        self, config: RepoConfig, table: FeatureView, keys: list[bytes], requested_features: list[str]
    ) -> list[tuple[datetime | None, dict[str, bytes] | None]] | None:
        """``online_read`` by Feast's serialised entity keys, for the feature server's lookups (serving/lookup.py):
        Feast's query and result (``_process_rows``: per key the last row's event time), the keys sent as one
        binary array (as text, psycopg escapes each key with a regular expression: a third of a 100-key read),
        each value as its stored bytes (the server converts them; a proto each was a fifth of a 100-key
        lookup). None for a view it does not read this way (embedding and aggregation views: ``online_read``)."""
        if aggregation_view(table) is not None or spec_for(table) is not None:
            return None
        name = compute_table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        query = sql.SQL(
            "SELECT entity_key, feature_name, value, event_ts FROM {} "
            "WHERE entity_key = ANY(%b) AND feature_name = ANY(%s)"
        ).format(sql.Identifier(name))
        with self._get_conn(config, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(query, (keys, requested_features))
            rows = cur.fetchall()
        found: dict[bytes, tuple[datetime, dict[str, bytes]]] = {}
        for key, feature, value, event_ts in rows:
            held = found.get(key)
            if held is None:
                found[key] = (event_ts, {feature: value})
            else:
                held[1][feature] = value
                found[key] = (event_ts, held[1])
        return [found.get(key, (None, None)) for key in keys]

    @staticmethod
    def _should_batch(config: RepoConfig, grouped_refs: list[Any], join_key_values: dict[str, Any]) -> bool:
        """Feast reads the views of a request in one UNION ALL query when there are several, each view's table as
        Feast lays it out, past ``online_read``: an aggregation view's values are computed there (its table holds
        contributions), so a request with one reads view by view. Seen as NOT_FOUND for customer_orders in the
        feature service purchase_model, from Feast's own server and the in-process SDK alike."""
        if any(aggregation_view(view) is not None for view, _ in grouped_refs):
            return False
        return PostgreSQLOnlineStore._should_batch(config, grouped_refs, join_key_values)

    @once_more_if_lost
    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Feast's read; an aggregation view's values computed now from its contributions (stores/contributions.py)."""
        aggregated = aggregation_view(table)
        if aggregated is None:
            return super().online_read(config, table, entity_keys, requested_features)
        with self._get_conn(config) as conn, conn.cursor() as cur:

            def execute(query: str, params: list[Any]) -> list[Any]:
                cur.execute(query, params)
                return cur.fetchall()

            # One statement per 500 keys, each its own snapshot (READ COMMITTED): a key's rows are consistent.
            answer = contributions.online_read(
                execute, "%s", table, aggregated, entity_keys, requested_features
            )
            conn.commit()
        return answer

    def _scan(
        self,
        config: RepoConfig,
        name: str,
        field: VectorField,
        embedding: list[float],
        top_k: int,
        requested_features: list[str],
    ) -> list[Document]:
        """A plain vector view: the stored vectors of the query's length, nearest first (exact: no index), as
        the processor and Feast's own write both keep them in ``vector_value``."""
        if not config.online_store.vector_enabled:
            raise ValueError(
                "similarity search needs `vector_enabled: true` under online_store in feature_store.yaml"
            )
        operator, _ = OPERATORS[field.metric]
        query = sql.SQL(
            "WITH hits AS (SELECT entity_key, vector_value {op} %(q)s::vector AS distance FROM {t} "
            "WHERE feature_name = %(field)s AND vector_value IS NOT NULL AND vector_dims(vector_value) = %(n)s "
            "ORDER BY 2, entity_key LIMIT %(k)s) "
            "SELECT h.entity_key, h.distance, f.feature_name, f.value, f.event_ts FROM hits h "
            "JOIN {t} f ON f.entity_key = h.entity_key AND f.feature_name = ANY(%(features)s)"
        ).format(op=sql.SQL(operator), t=sql.Identifier(name))
        params = {
            "q": str(embedding),
            "field": field.field,
            "n": len(embedding),
            "k": top_k,
            "features": sorted({*requested_features, field.field}),
        }
        with self._get_conn(config, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return _documents(cur, requested_features, config)

    @staticmethod
    def _declare(cur: Any, table: str, spec: EmbeddingSpec, options: Any) -> None:
        """Record the view's model; on a change drop the old model's vectors and index first. Then make
        sure the distinct vectors, their trigger and their HNSW index exist (stores/postgres/tables.py)."""
        # Indexes a DBA made on the distinct vectors go with the table when it is rebuilt below: re-created after.
        theirs = external_vector_indexes(cur, table)
        cur.execute(f"SELECT fingerprint FROM {MODELS} WHERE view = %s FOR UPDATE", (spec.view,))
        row = cur.fetchone()
        if row is None or row[0] != spec.fingerprint:
            # The old model's vectors must never answer a query embedded with the new one. Their
            # rows go (the other features stay); the text hashes go, so every text is re-embedded.
            # The distinct vectors go first, whole (their dimension may change), without a trigger per row.
            cur.execute(drop_vector_sync(table))
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE feature_name = %s").format(sql.Identifier(table)), (spec.field,)
            )
            cur.execute(f"DELETE FROM {TEXTS} WHERE view = %s", (spec.view,))
            cur.execute(
                f"INSERT INTO {MODELS} (view, fingerprint, model, backend, dim, declared_at, backfilled_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, NULL) ON CONFLICT (view) DO UPDATE SET "
                "fingerprint = EXCLUDED.fingerprint, model = EXCLUDED.model, backend = EXCLUDED.backend, "
                "dim = EXCLUDED.dim, declared_at = EXCLUDED.declared_at, backfilled_at = NULL",
                (spec.view, spec.fingerprint, spec.model, spec.backend, spec.dim, datetime.now(UTC)),
            )
        # The index of earlier releases, over every vector row (duplicates too), serves no query now.
        cur.execute(
            sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(legacy_vector_index_name(table)))
        )
        vector_type = getattr(options, "vector_type", "vector")
        if distinct_vectors_type(cur, table) not in (None, vector_type):
            # Stored as the other type: dropped whole, then refilled from the feature rows and indexed below
            # (searches meanwhile wait on the lock, and find every vector after).
            cur.execute(drop_vector_sync(table))
        cur.execute(vector_sync_ddl(table, spec.field, spec.dim, vector_type))
        for name, definition in theirs:
            cur.execute("SELECT to_regclass(%s)", (sql.Identifier(name).as_string(None),))
            row = cur.fetchone()
            if row is None or row[0] is None:
                try:
                    cur.execute(definition)
                except psycopg.Error as err:
                    raise ConfigError(
                        f"feast apply rebuilt {distinct_vectors_table(table)} (a model or vector_type change), "
                        f"and your index {name} on it could not be re-created: {err}",
                        f"drop it before feast apply and create it again after ({definition})",
                    ) from err
        if getattr(options, "vector_index", "hnsw") == "external":
            # Yours answers the searches: the plugin's would cost memory and every insert for nothing.
            cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(vector_index_name(table))))
            return
        quantization = getattr(options, "quantization", "none")
        if vector_index_quantization(cur, table) not in (None, quantization):
            # Built for the other quantization: rebuilt below (searches wait on the lock meanwhile).
            cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(vector_index_name(table))))
        cur.execute(
            vector_index_ddl(
                table,
                spec.dim,
                spec.metric,
                vector_type,
                quantization,
                getattr(options, "hnsw_m", 16),
                getattr(options, "hnsw_ef_construction", 64),
            )
        )

    @once_more_if_lost
    def retrieve_online_documents_v2(
        self,
        config: RepoConfig,
        table: FeatureView,
        requested_features: list[str],
        embedding: list[float] | None,
        top_k: int,
        distance_metric: str | None = None,
        query_string: str | None = None,
        filters: Any = None,
        include_feature_view_version_metadata: bool = False,
    ) -> list[Document]:
        """The ``top_k`` entities whose vectors are nearest ``embedding``, with ``distance``: an embedding view's
        through its HNSW index (approximate), a plain vector view's by an exact scan of ``vector_value``."""
        field = query_spec(table, embedding, query_string, filters)
        if top_k <= 0:
            return []
        name = compute_table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        spec = spec_for(table)
        if spec is None:
            return self._scan(config, name, field, list(embedding or []), top_k, requested_features)
        quantization = getattr(config.online_store, "quantization", "none")
        query = search_query(name, spec, quantization)
        wanted = sorted({*requested_features, spec.field})  # the vector row says the entity is live
        # HNSW returns at most ef_search candidates; ask for enough to fill top_k (binary: the candidates).
        candidates = max(getattr(config.online_store, "rerank_candidates", 100), top_k)
        ef_search = max(
            getattr(config.online_store, "hnsw_ef_search", 100),
            2 * top_k,
            candidates if quantization == "binary" else 0,
        )
        # One round trip: the query alone, in autocommit. ef_search is a setting of the connection, set when
        # it differs from the one this connection last got (a SET LOCAL needs BEGIN, SET, the query and COMMIT:
        # four round trips, ~0.5 ms of a 2 ms search). The store's connections serve this plugin only.
        with self._get_conn(config, autocommit=True) as conn, conn.cursor() as cur:
            if self._ef_search.get(conn) != ef_search:
                cur.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))
                self._ef_search[conn] = ef_search
            params = {"q": str(list(embedding or [])), "k": top_k, "c": candidates, "features": wanted}
            settings = getattr(config.online_store, "search_settings", None) or {}
            if self._settings.get(conn, {}) != settings:  # likewise, once per connection and change
                for name in self._settings.get(conn, {}).keys() - settings.keys():
                    cur.execute(sql.SQL("RESET {}").format(sql.Identifier(name)))
                if settings:
                    cur.execute(
                        "SELECT " + ", ".join(["set_config(%s, %s::text, false)"] * len(settings)),
                        [part for name, value in settings.items() for part in (name, str(value))],
                    )
                self._settings[conn] = dict(settings)
            cur.execute(query, params)
            return _documents(cur, requested_features, config)
