"""Feast's Milvus online store on the layout of stores/milvus/layout.py, as a Feast plugin.

feature_store.yaml selects it by import path (the rest are Feast's own ``milvus`` settings)::

    online_store:
      type: stores.milvus.feast.MilvusOnlineStore
      host: http://127.0.0.1      # `featurectl stack up` starts milvus-lite here (stores/milvus/server.py)
      port: 29530
      vector_enabled: true

What it changes from Feast 0.67's ``milvus`` store (feast/infra/online_stores/milvus_online_store):

- the collections (``update``, i.e. ``feast apply``): typed, nullable scalars and a vector of the view's
  own dimension with an HNSW index (layout.py says why), and the processor's bookkeeping;
- ``online_read``: NULL reads as NULL, every type as it was written, an absent entity as absent;
- ``online_write_batch`` (Feast's ``write_to_online_store``, ``push``, ``materialize``): each entity's row in
  this layout, its vector searchable when the write carries one;
- ``retrieve_online_documents_v2``: searches the view's vector (Feast's searches only when the vector
  field is among the requested features and answers it with the *query* vector), skips entities
  without a vector, and answers ``distance`` as the other stores do (cosine distance, smaller is nearer);
- a model change (``feast apply`` with another ``embedding.model``): the old model's vectors are made
  unsearchable at once, the collection rebuilt for a new dimension, and re-embedding (``reembed.py``)
  fills the new ones, as on the other stores.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from feast import Entity, FeatureView, RepoConfig
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.infra.online_stores.milvus_online_store.milvus import (
    MilvusOnlineStore as FeastMilvusOnlineStore,
)
from feast.infra.online_stores.milvus_online_store.milvus import (
    MilvusOnlineStoreConfig as FeastMilvusConfig,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from pydantic import Field

from embeddings.spec import EmbeddingSpec, spec_for
from stores.documents import Document, V2DocumentsOnly, floats, in_entity_key_order, query_spec
from stores.milvus import layout
from stores.milvus.errors import transient
from stores.milvus.layout import MODEL, PLACEHOLDER, PLACEHOLDER_DIM, SEARCHABLE, TEXT_HASH, TEXT_VERSION
from stores.milvus.lock import host_lock
from stores.ordering import epoch_us
from stores.ttl import ReadTtl

logger = logging.getLogger(__name__)
TYPE = "stores.milvus.feast.MilvusOnlineStore"
CONNECT_S = 15.0  # how long a client keeps trying to connect to a server restarting or shedding channels
RETRY_S = 0.5
CHUNK = 1000  # keys per `in [...]` filter


class MilvusOnlineStoreConfig(FeastMilvusConfig):
    """Feast's ``milvus`` online store settings (Feast finds the plugin's config by this name)."""

    type: Literal["stores.milvus.feast.MilvusOnlineStore"] = TYPE  # type: ignore[assignment]
    hnsw_m: int = Field(16, ge=2, le=100)
    """Links per node of each view's HNSW index, used when its collection is created."""
    hnsw_ef_construction: int = Field(64, ge=4, le=1000)
    """Candidates while building the index, used when the collection is created."""
    hnsw_ef_search: int = Field(100, ge=1, le=1000)
    """HNSW candidates per similarity query (at least 2 x top_k is used)."""


def index_options(config: Any) -> dict[str, Any]:
    """The HNSW parameters, and ``dim``: the dimension of a vector field without ``vector_length`` (Feast's
    ``embedding_dim``)."""
    return {
        "m": getattr(config, "hnsw_m", 16),
        "ef_construction": getattr(config, "hnsw_ef_construction", 64),
        "dim": int(getattr(config, "embedding_dim", 0) or 0),
    }


def _dim(config: RepoConfig) -> int:
    return int(index_options(config.online_store)["dim"])


def to_distance(metric: str, score: float) -> float:
    """Milvus's score as the distance pgvector and sqlite-vec answer (smaller is nearer)."""
    metric = metric.upper()
    if metric == "COSINE":
        return 1.0 - score  # Milvus answers the similarity
    if metric == "IP":
        return -score
    return math.sqrt(max(score, 0.0))  # L2: Milvus answers the squared distance


class Reloading:
    """pymilvus's client, whose reads of a released collection load it and are tried again.

    A Milvus server that restarts (milvus-lite always; a standalone whose query nodes came back) serves its
    collections released: every query and search fails with "call load() before search/get/query" until
    someone loads them, so readers and the processor would fail for good after a routine restart."""

    READS = frozenset({"query", "search", "get", "query_iterator"})  # idempotent: safe to run again

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in self.READS:
            return method

        def read(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                collection = args[0] if args else kwargs.get("collection_name")
                if released(exc) and collection:
                    logger.info(
                        "Milvus collection %s was released (a server restart): loading it", collection
                    )
                    self._client.load_collection(collection)
                elif transient(exc):  # the channel dropped (a restart; gRPC's "too many pings"): reads repeat
                    logger.info("Milvus read failed (%s); once more", " ".join(str(exc).split())[:200])
                    time.sleep(RETRY_S)
                else:
                    raise
                return method(*args, **kwargs)

        return read


def released(exc: BaseException) -> bool:
    """Whether pymilvus's ``exc`` says the collection is not loaded."""
    return getattr(exc, "code", None) == 101 or "call load() before" in str(exc)


class MilvusOnlineStore(ReadTtl, V2DocumentsOnly, FeastMilvusOnlineStore):
    """Feast's Milvus store on typed, nullable collections with an HNSW index per embedding view."""

    def _connect(self, config: RepoConfig) -> Any:
        """Feast's client, reloading a collection a restarted server serves released (``Reloading``). A connect
        that fails transiently (the server restarting; pymilvus's shared channel dropped by gRPC's "too many
        pings" and its reconnect refused once) is tried again for up to CONNECT_S."""
        deadline = time.monotonic() + CONNECT_S
        while True:
            try:
                client = super()._connect(config)
                break
            except Exception as exc:
                if not transient(exc) or time.monotonic() >= deadline:
                    raise
                logger.info("Milvus did not answer (%s); connecting again", " ".join(str(exc).split())[:200])
                self.client = None
                time.sleep(RETRY_S)
        return client if isinstance(client, Reloading) else Reloading(client)

    def _get_or_create_collection(self, config: RepoConfig, table: FeatureView) -> dict[str, Any]:
        client = self._connect(config)
        name = layout.collection_name(config.project, table)
        if name not in self._collections:
            layout.ensure_view(client, config.project, table, index_options(config.online_store))
            self._collections[name] = client.describe_collection(name)
        described: dict[str, Any] = self._collections[name]
        return described

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        client = self._connect(config)
        names = layout.ensure_bookkeeping(client, config.project)
        for view in tables_to_keep:
            spec = spec_for(view)
            for field in view.features:
                if field.vector_index and field.vector_length <= 0 and not _dim(config):
                    raise ValueError(
                        f"feature view {view.name}: vector field {field.name} has no vector_length, and the "
                        "online store no embedding_dim: set vector_length=<dimension> on the Field"
                    )
            if spec is not None and not config.online_store.vector_enabled:
                raise ValueError(
                    f"feature view {view.name} declares an embedding, but the online store has no vectors: "
                    "set `vector_enabled: true` under online_store in feature_store.yaml"
                )
            self._collections.pop(layout.collection_name(config.project, view), None)
            with host_lock(config):  # a model change rewrites rows: not between a processor's read and write
                declare(client, config.project, view, spec, index_options(config.online_store))
            self._get_or_create_collection(config, view)
        for view in tables_to_delete:
            name = layout.collection_name(config.project, view)
            if client.has_collection(name):
                client.drop_collection(name)
            self._collections.pop(name, None)
            client.delete(names["versions"], filter=f'view == "{view.name}"')
            client.delete(names["models"], filter=f'view == "{view.name}"')

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        client = self._connect(config)
        for view in tables:
            name = layout.collection_name(config.project, view)
            if client.has_collection(name):
                client.drop_collection(name)
        for what in layout.BOOKKEEPING:
            name = layout.bookkeeping(config.project, what)
            if client.has_collection(name):
                client.drop_collection(name)
        self._collections.clear()

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's writes (``write_to_online_store``, ``push``, ``materialize``) as rows of this layout, which
        ``online_read`` and search read: typed, NULL as NULL; a vector of the view's dimension searchable, an
        absent one out of search. Of one entity's rows in the batch the last wins, as in Feast's own stores;
        features the write does not carry keep their stored values. Like Feast's own stores, a write here is
        not ordered against the processor's (stores/milvus/sink.py keeps its versions for its own writes)."""
        client = self._connect(config)
        name = self._get_or_create_collection(config, table)["collection_name"]
        key_field = layout.key_field(table)
        cols = layout.columns(table, _dim(config))
        vector = layout.vector_column(table, _dim(config))
        latest: dict[str, tuple[dict[str, ValueProto], datetime, datetime | None]] = {}
        for entity_key, values, event_time, created in data:
            key = serialize_entity_key(
                entity_key, entity_key_serialization_version=config.entity_key_serialization_version
            ).hex()
            # The last row of an entity wins, as in Feast's own stores.
            latest[key] = (values, event_time, created)
        keys = list(latest)
        partial = [k for k in keys if any(c.name not in latest[k][0] for c in cols)]
        stored = self._stored_rows(client, name, key_field, cols, partial)
        records = []
        for key in keys:
            values, event_time, created = latest[key]
            before = stored.get(key, {})
            record: dict[str, Any] = {
                key_field: key,
                "event_ts": epoch_us(_utc(event_time)),
                "created_ts": epoch_us(_utc(created)) if created is not None else 0,
            }
            for c in cols:
                if c.is_vector:
                    continue
                record[c.name] = (
                    layout.stored_value(c, values[c.name]) if c.name in values else before.get(c.name)
                )
            if vector is None:
                record[PLACEHOLDER] = [0.0] * PLACEHOLDER_DIM
            elif vector.name in values:
                given = floats(values[vector.name])
                if given and len(given) != vector.dim:
                    raise ValueError(
                        f"feature view {table.name}: {vector.name} has {len(given)} values, the view declares "
                        f"vector_length={vector.dim}; write vectors of that length"
                    )
                record[vector.name] = given or [0.0] * vector.dim
                record[SEARCHABLE] = bool(given)
                record[TEXT_HASH] = record[MODEL] = record[TEXT_VERSION] = None  # not embedded here
            else:
                record[vector.name] = before.get(vector.name) or [0.0] * vector.dim
                for field in (SEARCHABLE, TEXT_HASH, MODEL, TEXT_VERSION):
                    record[field] = before.get(field, False if field == SEARCHABLE else None)
            records.append(record)
        for start in range(0, len(records), CHUNK):
            client.upsert(name, records[start : start + CHUNK])
            if progress is not None:
                progress(len(records[start : start + CHUNK]))

    def _stored_rows(
        self, client: Any, name: str, key_field: str, cols: list[layout.Column], keys: list[str]
    ) -> dict[str, dict[str, Any]]:
        """The stored rows of ``keys`` (every feature, the vector's bookkeeping too), by key."""
        if not keys:
            return {}
        fields = [f["name"] for f in client.describe_collection(name)["fields"] if f["name"] != key_field]
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), CHUNK):
            for hit in client.query(
                name,
                filter=f"{key_field} in {layout.quoted(keys[start : start + CHUNK])}",
                output_fields=fields,
            ):
                out[hit[key_field]] = hit
        return out

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        client = self._connect(config)
        name = self._get_or_create_collection(config, table)["collection_name"]
        key_field = layout.key_field(table)
        wanted = [
            c
            for c in layout.columns(table, _dim(config))
            if requested_features is None or c.name in requested_features
        ]
        keys = [
            serialize_entity_key(
                k, entity_key_serialization_version=config.entity_key_serialization_version
            ).hex()
            for k in entity_keys
        ]
        searchable = [SEARCHABLE] if any(c.is_vector for c in wanted) else []
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            for hit in client.query(
                name,
                filter=f"{key_field} in {layout.quoted(chunk)}",
                output_fields=[key_field, "event_ts", *(c.name for c in wanted), *searchable],
            ):
                found[hit[key_field]] = hit
        out: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            hit = found.get(key)
            if hit is None:
                out.append((None, None))
                continue
            # A vector of a model no longer declared (or of no text) is held as zeros, out of search: NULL.
            values = {
                c.name: ValueProto() if c.is_vector and not hit.get(SEARCHABLE) else _read(c, hit.get(c.name))
                for c in wanted
            }
            out.append((_time(hit["event_ts"]), values))
        return out

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
        """The ``top_k`` entities whose vectors are nearest ``embedding`` (HNSW: approximate), with ``distance``;
        an embedding view's vectors or a plain vector view's, written by the processor or by Feast."""
        spec = query_spec(table, embedding, query_string, filters)
        if top_k <= 0:
            return []
        client = self._connect(config)
        name = self._get_or_create_collection(config, table)["collection_name"]
        key_field = layout.key_field(table)
        wanted = [c for c in layout.columns(table, _dim(config)) if c.name in requested_features]
        ef = max(getattr(config.online_store, "hnsw_ef_search", 100), 2 * top_k)
        hits = client.search(
            name,
            data=[list(embedding or [])],
            anns_field=spec.field,
            limit=top_k,
            filter=f"{SEARCHABLE} == true",
            output_fields=[key_field, "event_ts", *(c.name for c in wanted)],
            search_params={"metric_type": spec.metric.upper(), "params": {"ef": ef}},
        )[0]
        results: list[Document] = []
        for hit in hits:
            entity = hit["entity"]
            row = {c.name: _read(c, entity.get(c.name)) for c in wanted}
            row["distance"] = ValueProto(float_val=to_distance(spec.metric, float(hit["distance"])))
            key = deserialize_entity_key(
                bytes.fromhex(entity[key_field]), config.entity_key_serialization_version
            )
            results.append((_time(entity["event_ts"]), key, row))
        return in_entity_key_order(results)


def _read(column: layout.Column, stored: Any) -> ValueProto:
    if column.is_vector:
        return ValueProto() if stored is None else _vector(stored)
    return layout.decode(column, stored)


def _utc(when: datetime) -> datetime:
    """Feast's timestamps: naive ones are UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _vector(values: Sequence[float]) -> ValueProto:
    proto = ValueProto()
    proto.float_list_val.val.extend(float(v) for v in values)
    return proto


def _time(event_us: int | None) -> datetime | None:
    if event_us is None:
        return None
    return datetime.fromtimestamp(event_us // 1_000_000, UTC).replace(microsecond=event_us % 1_000_000)


def declare(
    client: Any, project: str, view: FeatureView, spec: EmbeddingSpec | None, index: dict[str, Any]
) -> None:
    """Make ``view``'s collection match its declaration and record its model. A changed declaration
    (features added, removed or retyped, another vector dimension) rebuilds the collection, keeping every
    entity's values of the features that remain; a changed model makes the old model's vectors unsearchable
    at once, so vectors of two models never answer one query (re-embedding fills the new ones)."""
    names = layout.ensure_bookkeeping(client, project)
    name = layout.collection_name(project, view)
    _finish_rebuild(client, name)
    held = client.query(names["models"], filter=f'view == "{view.name}"', output_fields=["fingerprint"])
    changed_model = spec is not None and (not held or held[0]["fingerprint"] != spec.fingerprint)
    if spec is None and held:
        client.delete(names["models"], filter=f'view == "{view.name}"')
    if client.has_collection(name):
        if _shape(client.describe_collection(name)) != _shape(layout.view_schema(view, index["dim"])):
            _rebuild(client, project, view, index, keep_vectors=not changed_model)
        elif changed_model:
            _unsearchable(client, name, layout.vector_column(view, index["dim"]))
    layout.ensure_view(client, project, view, index)
    if spec is None or not changed_model:
        return
    client.upsert(
        names["models"],
        [
            {
                "view": view.name,
                "fingerprint": spec.fingerprint,
                "dim": spec.dim,
                "declared_at": datetime.now(UTC).isoformat(),
                "backfilled_at": "",
                layout.PLACEHOLDER: [0.0] * layout.PLACEHOLDER_DIM,
            }
        ],
    )
    logger.info(
        "%s: model %s declared in Milvus; its vectors are filled by re-embedding", view.name, spec.model
    )


def _shape(schema: Any) -> set[tuple[str, int, int]]:
    """(name, Milvus type, dimension) of each field, from a described collection or a CollectionSchema."""
    if isinstance(schema, dict):
        return {(f["name"], int(f["type"]), int(f.get("params", {}).get("dim", 0))) for f in schema["fields"]}
    return {(f.name, int(f.dtype), int(f.params.get("dim", 0))) for f in schema.fields}


def _all_rows(client: Any, name: str, fields: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    iterator = client.query_iterator(name, batch_size=1000, filter="", output_fields=fields)
    try:
        while batch := iterator.next():
            rows.extend(batch)
    finally:
        iterator.close()
    return rows


def _unsearchable(client: Any, name: str, vector: layout.Column | None) -> None:
    """Every entity's vector of the old model: out of search, its text hash forgotten (re-embedded)."""
    scalar = [f["name"] for f in client.describe_collection(name)["fields"]]
    rows = _all_rows(client, name, scalar)
    for row in rows:
        if vector is not None and vector.name in row:
            row[vector.name] = [0.0] * vector.dim
        row[SEARCHABLE], row[TEXT_HASH], row[MODEL], row[TEXT_VERSION] = False, None, None, None
    for start in range(0, len(rows), CHUNK):
        client.upsert(name, rows[start : start + CHUNK])


def _rebuild(client: Any, project: str, view: FeatureView, index: dict[str, Any], keep_vectors: bool) -> None:
    """The collection made again for a changed declaration, every entity kept with the values of the
    features that remain (new ones NULL); its vectors too when the model and the dimension are unchanged.
    Written beside the old one, then swapped: a crash leaves the old collection or the whole new one
    (``_finish_rebuild`` completes the swap at the next apply)."""
    name = layout.collection_name(project, view)
    spare = f"{name}__rebuild"
    if client.has_collection(spare):
        client.drop_collection(spare)
    old = {f["name"]: f for f in client.describe_collection(name)["fields"]}
    new = {f.name: f for f in layout.view_schema(view, index["dim"]).fields}
    same = [n for n, f in new.items() if n in old and _shape({"fields": [old[n]]}) == _shape(_Fields([f]))]
    vector = layout.vector_column(view, index["dim"])
    if not keep_vectors and vector is not None:
        same = [n for n in same if n not in (vector.name, SEARCHABLE, TEXT_HASH, MODEL, TEXT_VERSION)]
    rows = _all_rows(client, name, same)
    client.create_collection(
        spare,
        schema=layout.view_schema(view, index["dim"]),
        index_params=layout.view_index_params(client, view, index),
        consistency_level="Strong",
    )
    for row in rows:
        for n in new:
            if n in row:
                continue
            if vector is not None and n == vector.name:
                row[n], row[SEARCHABLE] = [0.0] * vector.dim, False
            elif n == layout.PLACEHOLDER:
                row[n] = [0.0] * layout.PLACEHOLDER_DIM
            elif n != SEARCHABLE:
                row[n] = None
    for start in range(0, len(rows), CHUNK):
        client.upsert(spare, rows[start : start + CHUNK])
    client.drop_collection(name)
    client.rename_collection(spare, name)
    client.load_collection(name)  # a renamed collection starts released
    logger.info("%s: collection rebuilt for its changed declaration (%d entities kept)", view.name, len(rows))


class _Fields:
    def __init__(self, fields: list[Any]) -> None:
        self.fields = fields


def _finish_rebuild(client: Any, name: str) -> None:
    """A rebuild that stopped between dropping the old collection and renaming the new one: finish it."""
    spare = f"{name}__rebuild"
    if client.has_collection(spare) and not client.has_collection(name):
        client.rename_collection(spare, name)
        client.load_collection(name)
        logger.warning("%s: finished a rebuild interrupted after its copy", name)


def json_keys(keys: dict[str, Any]) -> str:
    return json.dumps(keys, default=str, sort_keys=True)
