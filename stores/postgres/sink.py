"""The Postgres (pgvector) online store as a sink: Feast's table layout, the version guard in SQL.

Same contract as the SQLite sink (stores/sqlite/sink.py), for a store that many processors
on many hosts write at once. One transaction per flush, in READ COMMITTED:

1. the partition fences of this writer (``FOR SHARE``: a claim by another processor waits for this
   flush, or this flush sees the claim and writes nothing);
2. the views' TRUNCATE barriers (raised ones first; ``FOR SHARE`` so a barrier cannot move while rows
   under it are written);
3. the stored versions of the batch's entities, locked ``FOR UPDATE`` in key order (two writers of one
   entity take turns; sorted, so they do not deadlock);
4. the versions upserted with ``ON CONFLICT ... DO UPDATE ... WHERE stored <= new ... RETURNING``
   (rows under the view's barrier filtered out in the same statement): a
   writer that inserted the same new entity meanwhile wins or loses in SQL, never by a stale read,
   and only rows that won are written;
5. features (``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE``, one statement per view),
   deletes, vectors (in the feature table's ``vector_value``, as Feast reads them) and text hashes.

A raised barrier also deletes, in the same transaction, every entity of the view whose stored
version is below it, whichever writer put it there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.utils.postgres.connection_utils import _get_conn_kwargs, _get_conninfo
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from psycopg import sql

from core.errors import ConfigError, TransientError
from embeddings.spec import EmbeddingSpec, spec_for, text_hash, vector_field
from stores import contributions, transactions
from stores.feast_layout import (
    Decision,
    FeastLayoutSink,
    Latest,
    Stored,
    Version,
    fenced,
    lost_partitions,
    refuse_other_models,
)
from stores.ordering import epoch_us
from stores.postgres import KIND
from stores.postgres.feast import TYPE as PG_STORE_TYPE
from stores.postgres.tables import BARRIERS, CONTRIBUTIONS, FENCES, MODELS, TEXTS, VERSIONS, ensure_tables
from stores.sink import DELETE, Partition, SinkRow, StoredVector
from stores.values import value_bytes

logger = logging.getLogger(__name__)


def _vector_text(vector: Any) -> str | None:
    """pgvector's text form of a vector (float32 values, as the model made them)."""
    if vector is None or len(vector) == 0:
        return None  # pgvector has no empty vector: NULL, as for no vector
    if isinstance(vector, bytes | bytearray | memoryview):
        values = np.frombuffer(vector, dtype=np.float32)
    else:
        values = np.asarray(vector, dtype=np.float32)
    return "[" + ",".join(map(str, values.tolist())) + "]"


class PostgresOnlineSink(FeastLayoutSink):
    """Writes feature rows to a Postgres online store (Feast's layout) under the version guard."""

    def __init__(self, store: FeatureStore) -> None:
        super().__init__(store)
        config = store.config.online_store
        if config.type not in KIND.types:
            raise ConfigError(
                f"online store type {config.type!r} is not a Postgres store", f"use `type: {PG_STORE_TYPE}`"
            )
        self.vectors_enabled = bool(config.vector_enabled)
        self.indexed = KIND.indexes_vectors(config.type)
        self.aggregates = config.type in KIND.aggregating
        self._evicted: dict[str, float] = {}  # view -> when its expired contributions were last dropped
        self._pending: list[SinkRow] = []
        self._barriers: dict[str, Version] = {}
        self._analyzed: set[str] = set()  # tables whose planner statistics exist (_analyze_new)
        try:
            self._connection = self._connect()
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"cannot connect to the Postgres online store at {config.host}:{config.port} "
                f"(database {config.database}, user {config.user}): {' '.join(str(exc).split())}",
                "check online_store in feature_store.yaml (and FEATURECTL_ONLINE_PG_PASSWORD); "
                "locally: featurectl stack up --with online-postgres",
            ) from None
        with self._conn.transaction(), self._conn.cursor() as cur:
            # Writers starting together (workers, copies) would race on CREATE TABLE IF NOT EXISTS (a duplicate
            # pg_type row, seen with two processors): one at a time, per schema.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('featurectl_ddl:' || current_schema()))")
            ensure_tables(cur)
            for statement in transactions.schema(transactions.POSTGRES):
                cur.execute(statement)
            transactions.migrate(cur, transactions.POSTGRES)
        self._gate = transactions.Gate(transactions.POSTGRES)

    def _connect(self) -> psycopg.Connection[Any]:
        # Feast's own connection settings (sslmode, search_path = db_schema), so the sink writes exactly
        # where Feast reads.
        config = self.store.config.online_store
        return psycopg.connect(_get_conninfo(config), **_get_conn_kwargs(config))

    @property
    def _conn(self) -> psycopg.Connection[Any]:
        """The connection, opened again when the last one was lost (a restart, a failover): a connect that
        fails raises psycopg's OperationalError, which stores/postgres/errors.py calls transient, so the
        processor waits and retries the batch until the store is back."""
        if self._connection.closed:
            logger.warning("online store connection lost; reconnecting")
            self._connection = self._connect()
            logger.info("online store connection restored")
        return self._connection

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The sink's own connection (jobs that work in the store's bookkeeping use it)."""
        return self._conn

    # --- buffering ------------------------------------------------------------------------------
    def discard(self) -> None:
        self._pending.clear()
        self._barriers.clear()
        if self._gate is not None:
            self._gate.discard()
        conn = self._connection
        if conn.closed or conn.broken:  # lost with its transaction: nothing to roll back here
            conn.close()
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.OperationalError:  # lost during the rollback: the server dropped it anyway
                conn.close()

    # --- fencing --------------------------------------------------------------------------------
    def claim(self, partitions: Sequence[Partition], owner: str) -> dict[Partition, int]:
        out: dict[Partition, int] = {}
        with self._conn.transaction(), self._conn.cursor() as cur:
            for topic, partition in sorted(partitions):
                cur.execute(
                    f"INSERT INTO {FENCES} AS f (topic, partition, epoch, owner, claimed_at) "
                    "VALUES (%s, %s, 1, %s, now()) ON CONFLICT (topic, partition) DO UPDATE SET "
                    "epoch = f.epoch + 1, owner = EXCLUDED.owner, claimed_at = EXCLUDED.claimed_at RETURNING epoch",
                    (topic, partition, owner),
                )
                out[(topic, partition)] = int(cur.fetchone()[0])  # type: ignore[index]
        return out

    def _check_fences(self, cur: Any) -> None:
        if not self._held:
            return
        cur.execute(
            f"SELECT topic, partition, epoch, owner, claimed_at FROM {FENCES} WHERE topic = ANY(%s) "
            "ORDER BY topic, partition FOR SHARE",
            (sorted({t for t, _ in self._held}),),
        )
        lost = lost_partitions(self._held, cur.fetchall())
        if lost:
            raise fenced(lost)

    # --- the write ------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
        except psycopg.errors.DeadlockDetected as exc:  # rolled back whole: retry the batch
            raise TransientError(
                f"the online store chose this flush as a deadlock victim: {exc}", "none: retried"
            ) from exc
        except psycopg.errors.SerializationFailure as exc:
            raise TransientError(f"the online store asked for a retry: {exc}", "none: retried") from exc

    def _write(
        self,
        cur: Any,
        decision: Decision,
        views: dict[str, FeatureView],
        latest: Latest,
        current: Stored,
    ) -> None:
        key_of = {id(row): key for (_, key), (row, _) in latest.items()}
        won = self._write_versions(cur, decision.applied, key_of, current)
        lost = {id(r) for r in decision.applied if (r.view, key_of[id(r)]) not in won}
        if lost:  # another writer stored a newer version of this (new) entity meanwhile: it wins
            decision.skipped.extend(r for r in decision.applied if id(r) in lost)
            decision.applied = [r for r in decision.applied if id(r) not in lost]
            decision.upserts = {
                v: [(k, r) for k, r in items if id(r) not in lost] for v, items in decision.upserts.items()
            }
            decision.deletes = {v: [k for k in keys if (v, k) in won] for v, keys in decision.deletes.items()}
        for view_name, keys in decision.deletes.items():
            self._delete(cur, views[view_name], keys)
        for view_name, items in decision.upserts.items():
            self._upsert(cur, views[view_name], items)

    def _write_barriers(self, cur: Any, views: set[str]) -> dict[str, Version]:
        for view, (version, minor) in sorted(self._barriers.items()):
            cur.execute(
                f"INSERT INTO {BARRIERS} AS b (view, version, version_minor) VALUES (%s, %s, %s) "
                "ON CONFLICT (view) DO UPDATE SET version = EXCLUDED.version, version_minor = EXCLUDED.version_minor "
                "WHERE (EXCLUDED.version, EXCLUDED.version_minor) > (b.version, b.version_minor)",
                (view, version, minor),
            )
        if not views:
            return {}
        cur.execute(
            f"SELECT view, version, version_minor FROM {BARRIERS} WHERE view = ANY(%s) ORDER BY view FOR SHARE",
            (sorted(views),),
        )
        return {view: (version, minor) for view, version, minor in cur.fetchall()}

    def _current_versions(self, cur: Any, idents: list[tuple[str, bytes]], lock: bool = True) -> Stored:
        """Stored (version, commit time in µs) per entity, row-locked in key order when ``lock``."""
        by_view: dict[str, list[bytes]] = {}
        for view, key in idents:
            by_view.setdefault(view, []).append(key)
        out: Stored = {}
        for view, keys in sorted(by_view.items()):
            cur.execute(
                f"SELECT entity_key, version, version_minor, event_us FROM {VERSIONS} "
                "WHERE view = %s AND entity_key = ANY(%b) ORDER BY entity_key"
                + (" FOR UPDATE" if lock else ""),
                (view, keys),
            )
            for key, version, minor, event_us in cur.fetchall():
                out[(view, bytes(key))] = ((version, minor), event_us)
        return out

    # Array parameters go as %b (binary): in text format psycopg escapes every bytea element with a regex,
    # which was 70% of the write (bench/processor_bench.py --online-store postgres).

    def _write_versions(
        self,
        cur: Any,
        applied: list[SinkRow],
        key_of: dict[int, bytes],
        current: dict[tuple[str, bytes], Any],
    ) -> set[tuple[str, bytes]]:
        """Upsert the applied rows' versions where not lower than the stored version nor the view's barrier
        (the SQL guard: it holds even against a stale pre-read); the (view, key)s that won."""
        if not applied:
            return set()
        ordered = sorted(applied, key=lambda r: (r.view, key_of[id(r)]))
        cur.execute(
            f"INSERT INTO {VERSIONS} AS v (view, entity_key, version, version_minor, event_us, deleted, join_keys) "
            "SELECT u.* FROM unnest(%b::text[], %b::bytea[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bool[], "
            "%b::text[]) AS u(view, entity_key, version, version_minor, event_us, deleted, join_keys) "
            # The view's TRUNCATE barrier (locked FOR SHARE by this flush): nothing older than it is written.
            f"LEFT JOIN {BARRIERS} b ON b.view = u.view "
            "WHERE b.view IS NULL OR (u.version, u.version_minor) >= (b.version, b.version_minor) "
            "ON CONFLICT (view, entity_key) DO UPDATE SET version = EXCLUDED.version, "
            "version_minor = EXCLUDED.version_minor, event_us = EXCLUDED.event_us, deleted = EXCLUDED.deleted, "
            "join_keys = CASE WHEN EXCLUDED.join_keys = '' THEN v.join_keys ELSE EXCLUDED.join_keys END "
            "WHERE (v.version, v.version_minor) <= (EXCLUDED.version, EXCLUDED.version_minor) "
            "RETURNING view, entity_key",
            (
                [r.view for r in ordered],
                [key_of[id(r)] for r in ordered],
                [r.version for r in ordered],
                [r.version_minor for r in ordered],
                [epoch_us(r.event_time) for r in ordered],
                [r.op == DELETE for r in ordered],
                # Written only for a new entity: an existing one's row keeps its join_keys.
                [
                    "" if (r.view, key_of[id(r)]) in current else json.dumps(r.keys, default=str)
                    for r in ordered
                ],
            ),
        )
        return {(view, bytes(key)) for view, key in cur.fetchall()}

    def _table(self, view: FeatureView) -> sql.Identifier:
        return sql.Identifier(compute_table_id(self.project, view, self.versioning))

    def _delete(self, cur: Any, view: FeatureView, keys: list[bytes]) -> None:
        if self._aggregation(view) is not None:
            rows = [contributions.ident_of(k) for k in keys]
            cur.execute(
                f"DELETE FROM {CONTRIBUTIONS} WHERE view = %s AND source_row = ANY(%s)", (view.name, rows)
            )
            return
        cur.execute(sql.SQL("DELETE FROM {} WHERE entity_key = ANY(%s)").format(self._table(view)), (keys,))
        if spec_for(view) is not None:
            cur.execute(f"DELETE FROM {TEXTS} WHERE view = %s AND entity_key = ANY(%s)", (view.name, keys))

    def _upsert(self, cur: Any, view: FeatureView, items: list[tuple[bytes, SinkRow]]) -> None:
        """One statement for all rows of a view; the vector feature also in ``vector_value``."""
        aggregated = self._aggregation(view)
        if aggregated is not None:
            stored, expired = contributions.records(aggregated, [r for _, r in items])
            cur.executemany(contributions.upsert_sql("%s"), stored)
            cur.executemany(contributions.delete_sql("%s"), expired)
            self._evict(cur, aggregated)
            return
        spec = self._spec(view)
        # A plain vector view's vector (no embedding: embeddings/spec.py) goes to vector_value too, where
        # Feast's own write puts it and the plugin's search reads it.
        plain = vector_field(view) if spec is None and self.vectors_enabled else None
        created = datetime.now(UTC)
        keys, names, values, texts, vectors, event_ts = [], [], [], [], [], []
        cleared: list[bytes] = []  # upserts without a vector: their old vector row must go
        for feature in view.features:
            column = [row.features.get(feature.name) for _, row in items]
            is_vector = (spec is not None and feature.name == spec.field) or (
                plain is not None and feature.name == plain.field
            )
            encoded = value_bytes(column, feature.dtype.to_value_type())
            for (key, row), value, raw in zip(items, column, encoded, strict=True):
                if is_vector and value is None and spec is not None:
                    cleared.append(key)
                    continue
                keys.append(key)
                names.append(feature.name)
                values.append(raw)
                texts.append(value if isinstance(value, str) else None)
                vectors.append(_vector_text(value) if is_vector else None)
                event_ts.append(row.event_time)
        if spec is not None:
            self._check_model(cur, spec, items)
        table = self._table(view)
        vector_cast = sql.SQL("::vector" if self.vectors_enabled else "::bytea")
        cur.execute(
            sql.SQL(
                "INSERT INTO {t} (entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts) "
                "SELECT k, f, v, x, vv{cast}, e, %s FROM unnest(%b::bytea[], %b::text[], %b::bytea[], %b::text[], "
                "%b::text[], %b::timestamptz[]) AS u(k, f, v, x, vv, e) "
                "ON CONFLICT (entity_key, feature_name) DO UPDATE SET value = EXCLUDED.value, "
                "value_text = EXCLUDED.value_text, vector_value = EXCLUDED.vector_value, "
                "event_ts = EXCLUDED.event_ts, created_ts = EXCLUDED.created_ts"
            ).format(t=table, cast=vector_cast),
            (created, keys, names, values, texts, vectors, event_ts),
        )
        self._analyze_new(cur, table)
        if spec is not None:
            if cleared:  # no text, no vector: the entity leaves similarity results
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE feature_name = %s AND entity_key = ANY(%s)").format(table),
                    (spec.field, cleared),
                )
                cur.execute(
                    f"DELETE FROM {TEXTS} WHERE view = %s AND entity_key = ANY(%s)", (view.name, cleared)
                )
            gone = set(cleared)
            self._write_texts(cur, spec, [(k, r) for k, r in items if k not in gone])

    def _analyze_new(self, cur: Any, table: sql.Identifier) -> None:
        """A table never analyzed (new: `feast apply` made it) gets its planner statistics with its first rows
        (in this transaction, which ANALYZE counts). Without them Postgres plans a 100-key lookup as a scan of
        the whole table until autovacuum's first analyze, a minute or more after a bulk load (measured on 25,000
        rows: 3.0 ms scanned against 0.3 ms by the index). Later the planner scales the estimates by the
        table's size, and autovacuum refreshes them."""
        name = table.as_string(self._conn)
        if name in self._analyzed:
            return
        cur.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (name,))
        found = cur.fetchone()
        if found is not None and found[0] < 0:
            cur.execute(sql.SQL("ANALYZE {}").format(table))
            logger.info("analyzed %s: its first rows give the planner its statistics", name)
        self._analyzed.add(name)

    def _spec(self, view: FeatureView) -> EmbeddingSpec | None:
        spec = spec_for(view)
        if spec is not None and not self.vectors_enabled:
            raise ConfigError(
                f"feature view {view.name} declares an embedding, but the online store cannot index vectors",
                "set `vector_enabled: true` under online_store in feature_store.yaml and run feast apply",
            )
        return spec

    def _check_model(self, cur: Any, spec: EmbeddingSpec, items: list[tuple[bytes, SinkRow]]) -> None:
        """Refuse vectors of a model other than the declared one (a ``feast apply`` this writer missed)."""
        cur.execute(f"SELECT fingerprint FROM {MODELS} WHERE view = %s FOR SHARE", (spec.view,))
        row = cur.fetchone()
        refuse_other_models(spec, row[0] if row else None, (r for _, r in items))

    def _write_texts(self, cur: Any, spec: EmbeddingSpec, items: list[tuple[bytes, SinkRow]]) -> None:
        rows = [
            (key, text_hash(t), r.version) for key, r in items if (t := spec.text_of(r.features)) is not None
        ]
        if not rows:
            return
        cur.execute(
            f"INSERT INTO {TEXTS} (view, entity_key, fingerprint, text_hash, version) "
            "SELECT %s, k, %s, h, v FROM unnest(%s::bytea[], %s::text[], %s::bigint[]) AS u(k, h, v) "
            "ON CONFLICT (view, entity_key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
            "text_hash = EXCLUDED.text_hash, version = EXCLUDED.version "
            # The version of the change that set the text: an unchanged text keeps it.
            f"WHERE ({TEXTS}.text_hash, {TEXTS}.fingerprint) <> (EXCLUDED.text_hash, EXCLUDED.fingerprint)",
            (
                spec.view,
                spec.fingerprint,
                [k for k, _, _ in rows],
                [h for _, h, _ in rows],
                [v for _, _, v in rows],
            ),
        )

    def _clear_below_barrier(self, cur: Any, view: FeatureView, barrier: Version) -> None:
        """A TRUNCATE: every entity of the view stored below the barrier is deleted (any writer's)."""
        cur.execute(
            f"UPDATE {VERSIONS} SET deleted = true WHERE view = %s AND NOT deleted "
            "AND (version, version_minor) < (%s, %s) RETURNING entity_key",
            (view.name, *barrier),
        )
        keys = [bytes(k) for (k,) in cur.fetchall()]
        if keys:
            self._delete(cur, view, keys)

    def _evict(self, cur: Any, spec: Any) -> None:
        """Drop contributions no window can reach any more, at most once a minute per view (in the flush)."""
        now = contributions.now()
        if now.timestamp() - self._evicted.get(spec.view, 0.0) < 60:
            return
        self._evicted[spec.view] = now.timestamp()
        cur.execute(contributions.evict_sql("%s"), (spec.view, contributions.evict_before(spec, now)))

    # --- reads ----------------------------------------------------------------------------------
    def current_features(self, view: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        feature_view = self._view(view)
        if self._aggregation(feature_view) is not None:  # a contribution's raw values
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute(
                    f"SELECT source_row, vals FROM {CONTRIBUTIONS} WHERE view = %s AND source_row = ANY(%s)",
                    (view, [k["_row"] for k in keys]),
                )
                held = {row: json.loads(vals) for row, vals in cur.fetchall()}
            return [held.get(k["_row"]) for k in keys]
        spec = spec_for(feature_view)
        serialised = [self._entity_key(feature_view, k) for k in keys]
        found: dict[bytes, dict[str, Any]] = {}
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT entity_key, feature_name, value FROM {} WHERE entity_key = ANY(%s)").format(
                    self._table(feature_view)
                ),
                (serialised,),
            )
            for key, name, value in cur.fetchall():
                if spec is not None and name == spec.field:
                    continue  # vectors excepted (the contract of OnlineSink.current_features)
                found.setdefault(bytes(key), {})[name] = feast_value_type_to_python_type(
                    ValueProto.FromString(bytes(value))
                )
        return [found.get(k) for k in serialised]

    def stored_vectors(
        self, spec: EmbeddingSpec, keys: Sequence[dict[str, Any]]
    ) -> list[StoredVector | None]:
        view = self._view(spec.view)
        serialised = [self._entity_key(view, k) for k in keys]
        held: dict[bytes, StoredVector] = {}
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT t.entity_key, t.text_hash, t.version, f.vector_value::real[] FROM {texts} t "
                    "JOIN {table} f ON f.entity_key = t.entity_key AND f.feature_name = %s "
                    "WHERE t.view = %s AND t.fingerprint = %s AND t.entity_key = ANY(%s)"
                ).format(texts=sql.Identifier(TEXTS), table=self._table(view)),
                (spec.field, spec.view, spec.fingerprint, serialised),
            )
            for key, digest, version, vector in cur.fetchall():
                held[bytes(key)] = StoredVector(
                    digest, int(version), np.asarray(vector, dtype=np.float32).tobytes()
                )
        return [held.get(k) for k in serialised]

    def stored_stamps(
        self, view: str, keys: Sequence[dict[str, Any]]
    ) -> list[tuple[Version, int | None] | None]:
        feature_view = self._view(view)
        idents = [(view, self._entity_key(feature_view, k)) for k in keys]
        with self._conn.transaction(), self._conn.cursor() as cur:
            current = self._current_versions(cur, idents, lock=False)
        return [current.get(i) for i in idents]

    def _live_before(self, view: str, cutoff_us: int) -> list[tuple[dict[str, Any], Version, int]]:
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                f"SELECT join_keys, version, version_minor, event_us FROM {VERSIONS} "
                "WHERE view = %s AND NOT deleted AND event_us < %s",
                (view, cutoff_us),
            )
            return [
                (json.loads(j), (version, minor), event_us) for j, version, minor, event_us in cur.fetchall()
            ]

    def live_keys(self, view: str) -> list[dict[str, Any]]:
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(f"SELECT join_keys FROM {VERSIONS} WHERE view = %s AND NOT deleted", (view,))
            return [json.loads(j) for (j,) in cur.fetchall()]

    def reset(self) -> int:
        """Empty the online store (features, vectors, versions, barriers); returns the entities it held."""
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {VERSIONS} WHERE NOT deleted")
            held = int(cur.fetchone()[0])  # type: ignore[index]
            for view in self.store.list_feature_views():
                cur.execute(sql.SQL("DELETE FROM {}").format(self._table(view)))
            for table in (
                VERSIONS,
                BARRIERS,
                TEXTS,
                CONTRIBUTIONS,
                *transactions.tables(transactions.POSTGRES),
            ):
                cur.execute(f"DELETE FROM {table}")
            for statement in transactions.schema(transactions.POSTGRES):  # the frontier's row again
                cur.execute(statement)
        return held

    def transaction_state(self) -> transactions.State:
        with self._conn.transaction(), self._conn.cursor() as cur:
            return transactions.state(cur)

    def close(self) -> None:
        self._connection.close()
