"""Feast's SQLite online store plus a vector index per embedding view (sqlite-vec), as a Feast plugin.

feature_store.yaml selects it by import path::

    online_store:
      type: stores.sqlite.feast.VecSqliteOnlineStore
      path: data/online_store.db

Scalar features are Feast's SQLite tables, unchanged (the processor's sink writes that layout).
Vector features live in ``stores.sqlite.vectors`` tables, one per view and declared model:
``get_online_features`` returns a vector only from the declared model's table, and
``retrieve_online_documents_v2`` searches only that table, so vectors of two models are never
served together. Feast's own SQLite vector search is not used: it loads sqlite-vec only on
Python 3.10 and rebuilds one shared index per query, which keeps deleted rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from feast import Entity, FeatureView, RepoConfig
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, convert_timestamp
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from aggregations.spec import aggregation_view
from embeddings.spec import VectorField, spec_for
from stores import contributions, transactions
from stores.documents import V2DocumentsOnly, distances, floats, in_entity_key_order, query_spec
from stores.sqlite.db import OperationalError, connect, ensure_contributions_table
from stores.sqlite.vectors import VectorTable, as_floats, declare_model, forget_view
from stores.ttl import ReadTtl

TYPE = "stores.sqlite.feast.VecSqliteOnlineStore"
OLD_TYPE = "onlinestore.feast_store.VecSqliteOnlineStore"  # the name before stores/: onlinestore/, offlinestore/ keep it working


class VecSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite online store settings (``path``); vector search needs no further setting."""

    type: Literal[
        "stores.sqlite.feast.VecSqliteOnlineStore", "onlinestore.feast_store.VecSqliteOnlineStore"
    ] = TYPE  # type: ignore[assignment]


def _vector_value(blob: bytes) -> ValueProto:
    return ValueProto(float_list_val=FloatList(val=as_floats(blob)))


class VecSqliteOnlineStore(ReadTtl, V2DocumentsOnly, SqliteOnlineStore):
    """SQLite online store whose embedding views are searchable by similarity."""

    _raw: Any = None  # a connection returning stored values as they are (read_serialized)

    def _get_conn(self, config: RepoConfig) -> Any:
        if not self._conn:
            self._conn = connect(self._get_db_path(config))
        return self._conn

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Feast tables as Feast makes them; a vector table for each embedding view's declared model.

        A model change drops the old model's vectors at once (they must never be served with the
        new model's queries) and leaves an empty table for ``featurectl embeddings backfill``.
        """
        conn = self._get_conn(config)
        versioning = config.registry.enable_online_feature_view_versioning
        value_num = "value_num REAL," if config.online_store.enable_openai_compatible_store else ""
        with conn:
            # Feast's SqliteOnlineStore.update, on this connection: Feast's own catches the stdlib's
            # sqlite3.OperationalError, which pysqlite3's is not.
            for view in tables_to_keep:
                name = compute_table_id(config.project, view, versioning)
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" (entity_key BLOB, feature_name TEXT, value BLOB, '
                    f"value_text TEXT, {value_num} vector_value BLOB, event_ts timestamp, created_ts timestamp, "
                    "PRIMARY KEY(entity_key, feature_name))"
                )
                # Feast also indexes entity_key alone: redundant (the primary key's index answers
                # `entity_key IN (...)`, the only lookup), and it halved the rate of new entities.
                conn.execute(f'DROP INDEX IF EXISTS "{name}_ek"')
            for view in tables_to_delete:
                conn.execute(f'DROP TABLE IF EXISTS "{compute_table_id(config.project, view, versioning)}"')
            for view in tables_to_keep:
                spec = spec_for(view)
                if spec is None:
                    forget_view(conn, config.project, view.name)
                    continue
                table = VectorTable(config.project, spec)
                table.create(conn)
                declare_model(conn, spec)
                table.drop_others(conn)
            for view in tables_to_delete:
                forget_view(conn, config.project, view.name)
            ensure_contributions_table(conn)
            for view in tables_to_delete:  # an aggregation view's contributions go with it
                conn.execute(f"DELETE FROM {contributions.TABLE} WHERE view = ?", (view.name,))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        aggregated = aggregation_view(table)
        if aggregated is not None:  # computed now, from the key's contributions (stores/contributions.py)
            conn = self._get_conn(config)
            return contributions.online_read(
                lambda query, params: conn.execute(query, params).fetchall(),
                "?",
                table,
                aggregated,
                entity_keys,
                requested_features,
            )
        spec = spec_for(table)
        if spec is None or (requested_features is not None and spec.field not in requested_features):
            return super().online_read(config, table, entity_keys, requested_features)
        conn = self._get_conn(config)
        keys = [self._key(config, k) for k in entity_keys]
        with _snapshot(conn):  # features and vectors as of one moment
            rows = super().online_read(config, table, entity_keys, requested_features)
            vectors = VectorTable(config.project, spec).lookup(conn, keys)
        for key, (_, features) in zip(keys, rows, strict=True):
            stored = vectors.get(key)
            if features is not None and stored is not None:
                features[spec.field] = _vector_value(stored.vector)
        return rows

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
    ) -> list[tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]]:
        """The ``top_k`` entities whose vectors are nearest ``embedding``, with ``distance``: an embedding view's
        from its model's vector table, a plain vector view's by an exact scan of its vector feature."""
        field = query_spec(table, embedding, query_string, filters)
        assert embedding is not None
        spec = spec_for(table)
        if spec is None:
            return self._scan(config, table, field, embedding, top_k, requested_features)
        conn = self._get_conn(config)
        with _snapshot(conn):
            hits = VectorTable(config.project, spec).search(conn, embedding, top_k)
            features = self._features(config, table, [key for key, _, _ in hits])
        results: list[tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]] = []
        for key, distance, vector in hits:
            event_ts, values = features.get(key, (None, {}))
            if event_ts is None:
                continue  # not in the feature table: deleted in the same transaction as the vector
            row = {name: value for name, value in values.items() if name in requested_features}
            if spec.field in requested_features:
                row[spec.field] = _vector_value(vector)
            row["distance"] = ValueProto(float_val=distance)
            entity = deserialize_entity_key(key, config.entity_key_serialization_version)
            results.append((event_ts, entity, row))
        return in_entity_key_order(results)

    def _scan(
        self,
        config: RepoConfig,
        table: FeatureView,
        field: VectorField,
        embedding: list[float],
        top_k: int,
        requested_features: list[str],
    ) -> list[tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]]:
        """A plain vector view: every stored vector of the query's length compared (exact, no index), as
        written by the processor or by Feast (both keep the feature's value)."""
        if top_k <= 0:
            return []
        name = compute_table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        conn = self._get_conn(config)
        with _snapshot(conn):
            keys, vectors = [], []
            for key, blob in conn.execute(
                f'SELECT entity_key, value FROM "{name}" WHERE feature_name = ?', (field.field,)
            ):
                vector = floats(ValueProto.FromString(blob))
                if len(vector) == len(embedding):
                    keys.append(bytes(key))
                    vectors.append(vector)
            if not keys:
                return []
            near = distances(np.array(vectors), embedding, field.metric)
            order = np.argsort(near, kind="stable")[:top_k]
            features = self._features(config, table, [keys[i] for i in order])
        results: list[tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]] = []
        for i in order:
            event_ts, values = features.get(keys[i], (None, {}))
            row = {name: value for name, value in values.items() if name in requested_features}
            row["distance"] = ValueProto(float_val=float(near[i]))
            entity = deserialize_entity_key(keys[i], config.entity_key_serialization_version)
            results.append((event_ts, entity, row))
        return in_entity_key_order(results)

    def release_position(self, config: RepoConfig) -> int | None:
        """Where the processor's releases of source transactions stand (stores/transactions.py): a reader that
        finds it equal before and after several reads saw no release between them (serving/lookup.py); -1
        before the first."""
        if self._raw is None:
            self._raw = connect(self._get_db_path(config), convert=False)
        try:
            row = self._raw.execute(transactions.RELEASE_POSITION).fetchone()
        except OperationalError:  # no processor has written here yet: no table
            return -1
        return -1 if row is None else int(row[0])

    def read_serialized(
        self, config: RepoConfig, table: FeatureView, keys: list[bytes], requested_features: list[str]
    ) -> list[tuple[datetime | None, dict[str, bytes] | None]] | None:
        """``online_read`` by Feast's serialised entity keys, for the feature server's lookups
        (serving/lookup.py): Feast's query and result, each value as its stored bytes (the server converts
        them), without a proto per key or a datetime per stored value (each distinct event time is converted
        once, by Feast's converter). None for a view it does not read this way (embedding and aggregation
        views: ``online_read`` reads those)."""
        if aggregation_view(table) is not None or spec_for(table) is not None:
            return None
        if self._raw is None:
            self._raw = connect(self._get_db_path(config), convert=False)
        name = compute_table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        rows = self._raw.execute(
            f'SELECT entity_key, feature_name, value, event_ts FROM "{name}" '
            f"WHERE entity_key IN ({','.join('?' * len(keys))}) ORDER BY entity_key",
            keys,
        ).fetchall()
        found: dict[bytes, tuple[Any, dict[str, bytes]]] = {}
        for key, feature, value, event_ts in rows:
            held = found.get(key)
            if held is None:
                found[key] = (event_ts, {feature: value})
            else:  # Feast keeps the last row's time (rows in feature-name order, the primary key's)
                held[1][feature] = value
                found[key] = (event_ts, held[1])
        out: list[tuple[datetime | None, dict[str, bytes] | None]] = []
        times: dict[Any, datetime] = {}
        for key in keys:
            held = found.get(key)
            if held is None:
                out.append((None, None))
                continue
            when = times.get(held[0])
            if when is None:
                raw = held[0] if isinstance(held[0], bytes) else str(held[0]).encode()
                converted = convert_timestamp(raw)
                when = times[held[0]] = (
                    converted.replace(tzinfo=UTC) if converted.tzinfo is None else converted.astimezone(UTC)
                )
            out.append((when, held[1]))
        return out

    def _key(self, config: RepoConfig, entity_key: EntityKeyProto) -> bytes:
        return serialize_entity_key(
            entity_key, entity_key_serialization_version=config.entity_key_serialization_version
        )

    def _features(
        self, config: RepoConfig, table: FeatureView, keys: list[bytes]
    ) -> dict[bytes, tuple[datetime, dict[str, ValueProto]]]:
        if not keys:
            return {}
        name = compute_table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        out: dict[bytes, tuple[datetime, dict[str, ValueProto]]] = {}
        rows = self._get_conn(config).execute(
            f'SELECT entity_key, feature_name, value, event_ts FROM "{name}" '
            f"WHERE entity_key IN ({','.join('?' * len(keys))})",
            keys,
        )
        for key, feature, blob, event_ts in rows:
            value = ValueProto()
            value.ParseFromString(blob)
            ts = event_ts.replace(tzinfo=UTC) if event_ts.tzinfo is None else event_ts.astimezone(UTC)
            out.setdefault(bytes(key), (ts, {}))[1][feature] = value
        return out


class _snapshot:
    """A read transaction: in WAL mode every statement inside sees the same committed state."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN")
            self.began = True
        except OperationalError:  # already in a transaction (the caller's): read within it
            self.began = False

    def __exit__(self, *exc: object) -> None:
        if self.began:
            self.conn.execute("COMMIT")
