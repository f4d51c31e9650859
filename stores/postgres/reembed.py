"""Re-embedding on the Postgres store (the loop and its contract: stores/reembed.py).

After a model change, ``feast apply`` (stores/postgres/feast.py) has deleted the old model's vectors
and recorded the new declaration. A write locks the declaration (``FOR SHARE``) and the entities'
version rows (``FOR UPDATE``) in the transaction that writes, so a processor cannot change either
in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from psycopg import sql

from embeddings.spec import EmbeddingSpec, text_hash
from stores.postgres.sink import PostgresOnlineSink, _vector_text
from stores.postgres.tables import MODELS, TEXTS, VERSIONS
from stores.vector_store import ModelState, Stale


class PostgresVectors:
    """The VectorStore of the Postgres + pgvector online store."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.sink = PostgresOnlineSink(store)  # Feast's connection settings and the bookkeeping tables
        self.conn = self.sink.connection

    def close(self) -> None:
        self.sink.close()

    def _table(self, view: FeatureView | str) -> sql.Identifier:
        if isinstance(view, str):
            view = self.store.get_feature_view(view)
        versioning = self.store.config.registry.enable_online_feature_view_versioning
        return sql.Identifier(compute_table_id(self.store.project, view, versioning))

    def pending(self) -> list[str]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(f"SELECT view FROM {MODELS} WHERE backfilled_at IS NULL ORDER BY view")
            return [view for (view,) in cur.fetchall()]

    def state(self, view: FeatureView, spec: EmbeddingSpec) -> ModelState:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(f"SELECT fingerprint, backfilled_at FROM {MODELS} WHERE view = %s", (view.name,))
            row = cur.fetchone()
            count = self._count(cur, self._table(view), spec)
        at = row[1].isoformat() if row and row[1] else None
        return ModelState(spec, row[0] if row else None, at, count)

    def declared(self, view: str) -> str | None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            return _declared(cur, view)

    def prepare(self, spec: EmbeddingSpec) -> None:
        """Nothing: ``feast apply`` created the view's table and vector column."""

    def stale(self, view: FeatureView, spec: EmbeddingSpec) -> list[Stale]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT entity_key, feature_name, value FROM {} WHERE feature_name = ANY(%s)").format(
                    self._table(view)
                ),
                (list(spec.text_columns),),
            )
            features: dict[bytes, dict[str, Any]] = {}
            for key, name, blob in cur.fetchall():
                value = ValueProto.FromString(bytes(blob))
                features.setdefault(bytes(key), {})[name] = (
                    value.string_val if value.HasField("string_val") else None
                )
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
                    out.append(Stale(bytes(key), text, int(version), int(event_us or 0)))
            return out

    def write(self, spec: EmbeddingSpec, rows: Sequence[tuple[Stale, Any]]) -> bool:
        with self.conn.transaction(), self.conn.cursor() as cur:
            if _declared(cur, spec.view, lock=True) != spec.fingerprint:
                return False
            cur.execute(
                f"SELECT entity_key, version FROM {VERSIONS} WHERE view = %s AND NOT deleted "
                "AND entity_key = ANY(%s) ORDER BY entity_key FOR UPDATE",
                (spec.view, [s.key for s, _ in rows]),
            )
            now = {bytes(k): int(v) for k, v in cur.fetchall()}
            self._write(cur, spec, [(s, vector) for s, vector in rows if now.get(s.key) == s.version])
        return True

    def finish(self, spec: EmbeddingSpec) -> tuple[int, list[str]]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                f"UPDATE {MODELS} SET backfilled_at = now() WHERE view = %s AND fingerprint = %s",
                (spec.view, spec.fingerprint),
            )
            return self._count(cur, self._table(spec.view), spec), []  # feast apply deleted the old vectors

    @staticmethod
    def _count(cur: Any, table: sql.Identifier, spec: EmbeddingSpec) -> int:
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE feature_name = %s").format(table), (spec.field,))
        return int(cur.fetchone()[0])

    def _write(self, cur: Any, spec: EmbeddingSpec, rows: list[tuple[Stale, Any]]) -> None:
        """The vector rows (as Feast reads them) and their text hashes."""
        if not rows:
            return
        table = self._table(spec.view)
        created = datetime.now(UTC)
        for stale, vector in rows:
            floats = [float(x) for x in vector]
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (entity_key, feature_name, value, value_text, vector_value, event_ts, "
                    "created_ts) VALUES (%s, %s, %s, NULL, %s::vector, %s, %s) ON CONFLICT (entity_key, "
                    "feature_name) DO UPDATE SET value = EXCLUDED.value, vector_value = EXCLUDED.vector_value, "
                    "event_ts = EXCLUDED.event_ts, created_ts = EXCLUDED.created_ts"
                ).format(table),
                (
                    stale.key,
                    spec.field,
                    ValueProto(float_list_val=FloatList(val=floats)).SerializeToString(),
                    _vector_text(floats),
                    datetime.fromtimestamp(stale.event_us / 1e6, UTC),
                    created,
                ),
            )
            cur.execute(
                f"INSERT INTO {TEXTS} (view, entity_key, fingerprint, text_hash, version) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (view, entity_key) DO UPDATE SET "
                "fingerprint = EXCLUDED.fingerprint, text_hash = EXCLUDED.text_hash, version = EXCLUDED.version",
                (spec.view, stale.key, spec.fingerprint, text_hash(stale.text), stale.version),
            )


def _declared(cur: Any, view: str, lock: bool = False) -> str | None:
    cur.execute(f"SELECT fingerprint FROM {MODELS} WHERE view = %s" + (" FOR SHARE" if lock else ""), (view,))
    row = cur.fetchone()
    return None if row is None else str(row[0])
