"""Re-embedding backfill for the Postgres online store (same contract as embeddings/backfill.py).

After a model change, ``feast apply`` (onlinestore/pg_store.py) has deleted the old model's vectors
and recorded the new declaration. This fills the view's vector rows from the texts in the store.
Safe while processors run: a vector is written only while the entity's stored version is still the
one its text was read at (the version row is locked ``FOR UPDATE`` in the writing transaction; a
newer change in between means the processor embedded the newer text itself), and passes repeat
until every live entity's text hash matches its vector's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from psycopg import sql

from embeddings.backfill import BackfillResult, ModelState
from embeddings.models import load_embedder
from embeddings.spec import EmbeddingSpec, spec_for, text_hash
from featurectl.errors import ConfigError
from onlinestore.pg_tables import MODELS, TEXTS, VERSIONS
from streams.sinks.online_postgres import PostgresOnlineSink, _vector_text

logger = logging.getLogger(__name__)


def pending_views(store: FeatureStore) -> list[str]:
    """Embedding views whose declared model has not been backfilled yet."""
    sink = PostgresOnlineSink(store)
    try:
        with sink.connection.transaction(), sink.connection.cursor() as cur:
            cur.execute(f"SELECT view FROM {MODELS} WHERE backfilled_at IS NULL ORDER BY view")
            return [view for (view,) in cur.fetchall()]
    finally:
        sink.close()


def model_states(store: FeatureStore) -> list[ModelState]:
    """embeddings/backfill.py ``model_states`` for the Postgres store."""
    versioning = store.config.registry.enable_online_feature_view_versioning
    sink = PostgresOnlineSink(store)
    out = []
    try:
        with sink.connection.transaction(), sink.connection.cursor() as cur:
            for view in store.list_feature_views():
                spec = spec_for(view)
                if spec is None:
                    continue
                cur.execute(f"SELECT fingerprint, backfilled_at FROM {MODELS} WHERE view = %s", (view.name,))
                row = cur.fetchone()
                table = sql.Identifier(compute_table_id(store.project, view, versioning))
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE feature_name = %s").format(table), (spec.field,)
                )
                count = int(cur.fetchone()[0])  # type: ignore[index]
                at = row[1].isoformat() if row and row[1] else None
                out.append(ModelState(spec, row[0] if row else None, at, count))
        return out
    finally:
        sink.close()


def _declared(cur: Any, view: str, lock: bool = False) -> str | None:
    cur.execute(f"SELECT fingerprint FROM {MODELS} WHERE view = %s" + (" FOR SHARE" if lock else ""), (view,))
    row = cur.fetchone()
    return None if row is None else str(row[0])


def _stale(cur: Any, table: sql.Identifier, spec: EmbeddingSpec) -> list[tuple[bytes, str, int, int]]:
    """Live entities whose vector is missing or not of their current text: (key, text, version, event_us)."""
    cur.execute(
        sql.SQL("SELECT entity_key, feature_name, value FROM {} WHERE feature_name = ANY(%s)").format(table),
        (list(spec.text_columns),),
    )
    features: dict[bytes, dict[str, Any]] = {}
    for key, name, blob in cur.fetchall():
        value = ValueProto.FromString(bytes(blob))
        features.setdefault(bytes(key), {})[name] = value.string_val if value.HasField("string_val") else None
    cur.execute(
        f"SELECT v.entity_key, v.version, v.event_us, t.text_hash FROM {VERSIONS} v LEFT JOIN {TEXTS} t "
        "ON t.view = v.view AND t.entity_key = v.entity_key AND t.fingerprint = %s "
        "WHERE v.view = %s AND NOT v.deleted",
        (spec.fingerprint, spec.view),
    )
    out = []
    for key, version, event_us, held in cur.fetchall():
        text = spec.text_of(features.get(bytes(key), {}))
        if text is not None and held != text_hash(text):
            out.append((bytes(key), text, int(version), int(event_us or 0)))
    return out


def reembed(
    store: FeatureStore,
    view_name: str,
    chunk: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillResult:
    """Embed every live entity of ``view_name`` whose vector is missing or stale under the declared model."""
    started = time.monotonic()
    store.refresh_registry()  # type: ignore[no-untyped-call]
    view = store.get_feature_view(view_name)
    spec = spec_for(view)
    if spec is None:
        raise ConfigError(
            f"feature view {view_name} declares no embedding", "pick a view with a vector field"
        )
    table = sql.Identifier(
        compute_table_id(store.project, view, store.config.registry.enable_online_feature_view_versioning)
    )
    sink = PostgresOnlineSink(store)
    conn = sink.connection
    try:
        with conn.transaction(), conn.cursor() as cur:
            if _declared(cur, view_name) != spec.fingerprint:
                raise ConfigError(
                    f"feature view {view_name}: model {spec.model} is declared in the registry but not in the "
                    "online store",
                    "run `featurectl feast-apply` (it applies the declarations, then backfills)",
                )
        embedded = passes = 0
        while True:
            with conn.transaction(), conn.cursor() as cur:
                stale = _stale(cur, table, spec)
            if not stale:
                break
            passes += 1
            embedder = load_embedder(spec)
            logger.info(
                "%s: re-embedding %d texts with %s (pass %d)", view_name, len(stale), spec.model, passes
            )
            for i in range(0, len(stale), chunk):
                part = stale[i : i + chunk]
                vectors = embedder.embed([t for _, t, _, _ in part])
                with conn.transaction(), conn.cursor() as cur:
                    if _declared(cur, view_name, lock=True) != spec.fingerprint:
                        raise ConfigError(
                            f"feature view {view_name}: its model changed again while backfilling",
                            "run `featurectl feast-apply` again: it backfills the newly declared model",
                        )
                    cur.execute(
                        f"SELECT entity_key, version FROM {VERSIONS} WHERE view = %s AND NOT deleted "
                        "AND entity_key = ANY(%s) ORDER BY entity_key FOR UPDATE",
                        (view_name, [k for k, _, _, _ in part]),
                    )
                    now = {bytes(k): int(v) for k, v in cur.fetchall()}
                    keep = [(p, vec) for p, vec in zip(part, vectors, strict=True) if now.get(p[0]) == p[2]]
                    _write(cur, table, spec, keep)
                embedded += len(part)
                if progress:
                    progress(min(i + chunk, len(stale)), len(stale))
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                f"UPDATE {MODELS} SET backfilled_at = now() WHERE view = %s AND fingerprint = %s",
                (view_name, spec.fingerprint),
            )
            cur.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE feature_name = %s").format(table), (spec.field,)
            )
            count = int(cur.fetchone()[0])  # type: ignore[index]
        return BackfillResult(view_name, spec.model, embedded, passes, count, time.monotonic() - started)
    finally:
        sink.close()


def _write(cur: Any, table: sql.Identifier, spec: EmbeddingSpec, rows: list[tuple[Any, Any]]) -> None:
    """The vector rows (as Feast reads them) and their text hashes."""
    if not rows:
        return
    created = datetime.now(UTC)
    for (key, text, version, event_us), vector in rows:
        floats = [float(x) for x in vector]
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts) "
                "VALUES (%s, %s, %s, NULL, %s::vector, %s, %s) ON CONFLICT (entity_key, feature_name) DO UPDATE "
                "SET value = EXCLUDED.value, vector_value = EXCLUDED.vector_value, event_ts = EXCLUDED.event_ts, "
                "created_ts = EXCLUDED.created_ts"
            ).format(table),
            (
                key,
                spec.field,
                ValueProto(float_list_val=FloatList(val=floats)).SerializeToString(),
                _vector_text(floats),
                datetime.fromtimestamp(event_us / 1e6, UTC),
                created,
            ),
        )
        cur.execute(
            f"INSERT INTO {TEXTS} (view, entity_key, fingerprint, text_hash, version) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (view, entity_key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
            "text_hash = EXCLUDED.text_hash, version = EXCLUDED.version",
            (spec.view, key, spec.fingerprint, text_hash(text), version),
        )
