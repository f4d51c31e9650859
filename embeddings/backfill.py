"""Re-embedding backfill: fill a view's declared-model vector table from the texts in the online store.

Run after a model change (``featurectl feast-apply`` runs it for every view whose declared model
has not been backfilled) or by hand (``featurectl embeddings backfill VIEW``). Safe while the
processor runs: a vector is written only if the entity's version is still the one its text was
read at (else the processor has written a newer text, and the next pass picks it up), and passes
repeat until no live entity's text differs from what its vector was computed from. Then the
view is marked backfilled and other models' tables are dropped. Re-running it does nothing new.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from embeddings.models import load_embedder
from embeddings.spec import EmbeddingSpec, spec_for, text_hash
from featurectl.errors import ConfigError
from onlinestore.sqlite import VERSIONS, connect, ensure_versions_table
from onlinestore.vectors import (
    MODELS,
    VectorTable,
    declared_fingerprint,
    ensure_models_table,
    mark_backfilled,
)

logger = logging.getLogger(__name__)


@dataclass
class BackfillResult:
    view: str
    model: str
    embedded: int
    passes: int
    vectors: int
    seconds: float


def online_db(store: FeatureStore) -> Path:
    path = Path(store.config.online_store.path)
    return path if path.is_absolute() else Path(store.config.repo_path or ".") / path


@dataclass
class ModelState:
    spec: EmbeddingSpec  # as the registry declares it
    declared: str | None  # the fingerprint the online store was last applied with
    backfilled_at: str | None
    vectors: int


def model_states(store: FeatureStore) -> list[ModelState]:
    """Each embedding view's declared model in the registry and in the online store, and its vectors."""
    if store.config.online_store.type in ("redis", "onlinestore.redis_store.RedisOnlineStore"):
        return []
    if _on_postgres(store):
        from embeddings import backfill_pg

        return backfill_pg.model_states(store)
    conn = connect(online_db(store))
    try:
        ensure_models_table(conn)
        out = []
        for view in store.list_feature_views():
            spec = spec_for(view)
            if spec is None:
                continue
            row = conn.execute(
                f"SELECT fingerprint, backfilled_at FROM {MODELS} WHERE view = ?", (view.name,)
            ).fetchone()
            count = VectorTable(store.project, spec).count(conn)
            out.append(ModelState(spec, row[0] if row else None, row[1] if row else None, count))
        return out
    finally:
        conn.close()


def _on_postgres(store: FeatureStore) -> bool:
    return store.config.online_store.type in ("postgres", "onlinestore.pg_store.PgVectorOnlineStore")


def pending_views(store: FeatureStore) -> list[str]:
    """Embedding views whose declared model has not been backfilled yet."""
    if store.config.online_store.type in ("redis", "onlinestore.redis_store.RedisOnlineStore"):
        return []  # no vectors there (the sink and feast-apply refuse vector views)
    if _on_postgres(store):
        from embeddings import backfill_pg

        return backfill_pg.pending_views(store)
    conn = connect(online_db(store))
    try:
        ensure_models_table(conn)
        rows = conn.execute(f"SELECT view FROM {MODELS} WHERE backfilled_at IS NULL ORDER BY view")
        return [view for (view,) in rows]
    finally:
        conn.close()


def _texts(
    conn: Any, store: FeatureStore, view: FeatureView, spec: EmbeddingSpec
) -> dict[bytes, tuple[str, int]]:
    """Live entities' current text and version, from the online store."""
    table = compute_table_id(store.project, view, store.config.registry.enable_online_feature_view_versioning)
    marks = ",".join("?" * len(spec.text_columns))
    features: dict[bytes, dict[str, Any]] = {}
    for key, name, blob in conn.execute(
        f'SELECT entity_key, feature_name, value FROM "{table}" WHERE feature_name IN ({marks})',
        spec.text_columns,
    ):
        value = ValueProto()
        value.ParseFromString(blob)
        features.setdefault(bytes(key), {})[name] = value.string_val if value.HasField("string_val") else None
    versions = dict(conn.execute(f"SELECT entity_key, version FROM {VERSIONS} WHERE view = ?", (view.name,)))
    out: dict[bytes, tuple[str, int]] = {}
    for key, values in features.items():
        text = spec.text_of(values)
        if text is not None:
            out[key] = (text, int(versions.get(key, 0)))
    return out


def reembed(
    store: FeatureStore,
    view_name: str,
    chunk: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillResult:
    """Embed every live entity of ``view_name`` whose vector is missing or stale under the declared model."""
    if _on_postgres(store):
        from embeddings import backfill_pg

        return backfill_pg.reembed(store, view_name, chunk, progress)
    started = time.monotonic()
    store.refresh_registry()  # type: ignore[no-untyped-call]
    view = store.get_feature_view(view_name)
    spec = spec_for(view)
    if spec is None:
        raise ConfigError(
            f"feature view {view_name} declares no embedding", "pick a view with a vector field"
        )
    conn = connect(online_db(store))
    try:
        ensure_models_table(conn)
        declared = declared_fingerprint(conn, view_name)
        if declared != spec.fingerprint:
            raise ConfigError(
                f"feature view {view_name}: model {spec.model} is declared in the registry but not in the "
                "online store",
                "run `featurectl feast-apply` (it applies the declarations, then backfills)",
            )
        table = VectorTable(store.project, spec)
        with conn:
            table.create(conn)
            ensure_versions_table(conn)
        embedded = passes = 0
        while True:
            texts = _texts(conn, store, view, spec)
            held = {k: v.text_hash for k, v in table.lookup(conn, list(texts)).items()}
            stale = [(k, t, v) for k, (t, v) in texts.items() if held.get(k) != text_hash(t)]
            if not stale:
                break
            passes += 1
            embedder = load_embedder(spec)  # loaded only when there is something to embed
            logger.info(
                "%s: re-embedding %d texts with %s (pass %d)", view_name, len(stale), spec.model, passes
            )
            for i in range(0, len(stale), chunk):
                part = stale[i : i + chunk]
                vectors = embedder.embed([t for _, t, _ in part])
                with conn:  # one transaction: check versions, then write
                    if declared_fingerprint(conn, view_name) != spec.fingerprint:
                        raise ConfigError(
                            f"feature view {view_name}: its model changed again while backfilling",
                            "run `featurectl feast-apply` again: it backfills the newly declared model",
                        )
                    now = _versions(conn, view_name, [k for k, _, _ in part])
                    table.put(
                        conn,
                        [
                            (k, vec, text_hash(t), v)
                            for (k, t, v), vec in zip(part, vectors, strict=True)
                            if now.get(k) == v or (v == 0 and k not in now)
                        ],
                    )
                embedded += len(part)
                if progress:
                    progress(min(i + chunk, len(stale)), len(stale))
        with conn:
            mark_backfilled(conn, spec)
            dropped = table.drop_others(conn)
        if dropped:
            logger.info("%s: dropped vectors of previous models: %s", view_name, ", ".join(dropped))
        return BackfillResult(
            view_name, spec.model, embedded, passes, table.count(conn), time.monotonic() - started
        )
    finally:
        conn.close()


def _versions(conn: Any, view: str, keys: list[bytes]) -> dict[bytes, int]:
    marks = ",".join("?" * len(keys))
    rows = conn.execute(
        f"SELECT entity_key, version FROM {VERSIONS} WHERE view = ? AND deleted = 0 AND entity_key IN ({marks})",
        [view, *keys],
    )
    return {bytes(k): int(v) for k, v in rows}
