"""Re-embedding on the SQLite store (the loop and its contract: stores/reembed.py).

Texts come from Feast's table of the view, versions from the sink's version table; a write is one
transaction that checks the declared model and each entity's version before it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from embeddings.spec import EmbeddingSpec, text_hash
from stores.sqlite.db import VERSIONS, connect, ensure_versions_table
from stores.sqlite.vectors import (
    MODELS,
    VectorTable,
    declared_fingerprint,
    ensure_models_table,
    mark_backfilled,
)
from stores.vector_store import ModelState, Stale


def online_db(store: FeatureStore) -> Path:
    """The SQLite file of ``store``'s online store, relative paths from the repository."""
    path = Path(store.config.online_store.path)
    return path if path.is_absolute() else Path(store.config.repo_path or ".") / path


class SqliteVectors:
    """The VectorStore of the SQLite + sqlite-vec online store."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.conn = connect(online_db(store))
        with self.conn:
            ensure_models_table(self.conn)

    def close(self) -> None:
        self.conn.close()

    def pending(self) -> list[str]:
        rows = self.conn.execute(f"SELECT view FROM {MODELS} WHERE backfilled_at IS NULL ORDER BY view")
        return [view for (view,) in rows]

    def state(self, view: FeatureView, spec: EmbeddingSpec) -> ModelState:
        row = self.conn.execute(
            f"SELECT fingerprint, backfilled_at FROM {MODELS} WHERE view = ?", (view.name,)
        ).fetchone()
        count = VectorTable(self.store.project, spec).count(self.conn)
        return ModelState(spec, row[0] if row else None, row[1] if row else None, count)

    def declared(self, view: str) -> str | None:
        return declared_fingerprint(self.conn, view)

    def prepare(self, spec: EmbeddingSpec) -> None:
        with self.conn:
            VectorTable(self.store.project, spec).create(self.conn)
            ensure_versions_table(self.conn)

    def stale(self, view: FeatureView, spec: EmbeddingSpec) -> list[Stale]:
        texts = self._texts(view, spec)
        held = {
            k: v.text_hash
            for k, v in VectorTable(self.store.project, spec).lookup(self.conn, list(texts)).items()
        }
        return [Stale(k, t, v) for k, (t, v) in texts.items() if held.get(k) != text_hash(t)]

    def write(self, spec: EmbeddingSpec, rows: Sequence[tuple[Stale, Any]]) -> bool:
        with self.conn:  # one transaction: check the model and versions, then write
            if declared_fingerprint(self.conn, spec.view) != spec.fingerprint:
                return False
            now = self._versions(spec.view, [s.key for s, _ in rows])
            VectorTable(self.store.project, spec).put(
                self.conn,
                [
                    (s.key, vector, text_hash(s.text), s.version)
                    for s, vector in rows
                    # an entity the backfill wrote (version 0) has no version row
                    if now.get(s.key) == s.version or (s.version == 0 and s.key not in now)
                ],
            )
        return True

    def finish(self, spec: EmbeddingSpec) -> tuple[int, list[str]]:
        table = VectorTable(self.store.project, spec)
        with self.conn:
            mark_backfilled(self.conn, spec)
            dropped = table.drop_others(self.conn)
        return table.count(self.conn), dropped

    def _texts(self, view: FeatureView, spec: EmbeddingSpec) -> dict[bytes, tuple[str, int]]:
        """Live entities' current text and version, from the online store."""
        table = compute_table_id(
            self.store.project, view, self.store.config.registry.enable_online_feature_view_versioning
        )
        marks = ",".join("?" * len(spec.text_columns))
        features: dict[bytes, dict[str, Any]] = {}
        for key, name, blob in self.conn.execute(
            f'SELECT entity_key, feature_name, value FROM "{table}" WHERE feature_name IN ({marks})',
            spec.text_columns,
        ):
            value = ValueProto()
            value.ParseFromString(blob)
            features.setdefault(bytes(key), {})[name] = (
                value.string_val if value.HasField("string_val") else None
            )
        versions = dict(
            self.conn.execute(f"SELECT entity_key, version FROM {VERSIONS} WHERE view = ?", (view.name,))
        )
        out: dict[bytes, tuple[str, int]] = {}
        for key, values in features.items():
            text = spec.text_of(values)
            if text is not None:
                out[key] = (text, int(versions.get(key, 0)))
        return out

    def _versions(self, view: str, keys: list[bytes]) -> dict[bytes, int]:
        marks = ",".join("?" * len(keys))
        rows = self.conn.execute(
            f"SELECT entity_key, version FROM {VERSIONS} WHERE view = ? AND deleted = 0 AND entity_key IN ({marks})",
            [view, *keys],
        )
        return {bytes(k): int(v) for k, v in rows}
