"""The vector index of one feature view and one model: a sqlite-vec ``vec0`` table in the online store.

One table per (view, model fingerprint), named ``<project>_<view>__vec_<fingerprint>``, so vectors
of two models never share an index; a model change starts an empty table that a re-embedding
backfill fills. Rows are keyed by Feast's serialised entity key (hex) and carry the hash of the
text they were computed from, and the version (WAL position) of the change that set that text.
Search is exact k-nearest-neighbours (sqlite-vec scans with SIMD; no approximate index).

Also here: ``featurectl_embeddings``, the model each vector view declared at its last ``feast
apply`` (written by the Feast store's ``update``) and when its backfill completed. Writers compare
against it so a processor that has not yet seen a model change never writes a vector of the old model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from embeddings.spec import EmbeddingSpec
from stores.sink import StoredVector

MODELS = "featurectl_embeddings"
_CHUNK = 400  # stay under SQLite's bound-parameter limit


def table_prefix(project: str, view: str) -> str:
    return f"{project}_{view}__vec_"


def vector_tables(conn: Any, project: str, view: str) -> list[str]:
    """Every vector table of a view (any model); vec0's shadow tables are not listed."""
    prefix = table_prefix(project, view)
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%' "
        "AND substr(name, 1, ?) = ?",
        (len(prefix), prefix),
    )
    return [name for (name,) in rows]


def ensure_models_table(conn: Any) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MODELS} (view TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
        "model TEXT NOT NULL, backend TEXT NOT NULL, dim INTEGER NOT NULL, declared_at TEXT NOT NULL, "
        "backfilled_at TEXT)"
    )


def declare_model(conn: Any, spec: EmbeddingSpec) -> bool:
    """Record the view's declared model; True when it changed (its vectors need a re-embedding)."""
    ensure_models_table(conn)
    row = conn.execute(f"SELECT fingerprint FROM {MODELS} WHERE view = ?", (spec.view,)).fetchone()
    if row is not None and row[0] == spec.fingerprint:
        return False
    conn.execute(
        f"INSERT INTO {MODELS} (view, fingerprint, model, backend, dim, declared_at, backfilled_at) "
        "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (view) DO UPDATE SET fingerprint = excluded.fingerprint, "
        "model = excluded.model, backend = excluded.backend, dim = excluded.dim, "
        "declared_at = excluded.declared_at, backfilled_at = NULL",
        (spec.view, spec.fingerprint, spec.model, spec.backend, spec.dim, datetime.now(UTC).isoformat()),
    )
    return row is not None


def declared_fingerprint(conn: Any, view: str) -> str | None:
    """The fingerprint recorded at the last ``feast apply`` (needs ``ensure_models_table`` once)."""
    row = conn.execute(f"SELECT fingerprint FROM {MODELS} WHERE view = ?", (view,)).fetchone()
    return None if row is None else str(row[0])


def mark_backfilled(conn: Any, spec: EmbeddingSpec) -> None:
    conn.execute(
        f"UPDATE {MODELS} SET backfilled_at = ? WHERE view = ? AND fingerprint = ?",
        (datetime.now(UTC).isoformat(), spec.view, spec.fingerprint),
    )


def delete_keys(conn: Any, table: str, keys: Sequence[bytes]) -> None:
    """Delete entities from a vector table, in chunks under SQLite's bound-parameter limit."""
    for i in range(0, len(keys), _CHUNK):
        chunk = [k.hex() for k in keys[i : i + _CHUNK]]
        conn.execute(f'DELETE FROM "{table}" WHERE entity_key IN ({",".join("?" * len(chunk))})', chunk)


def forget_view(conn: Any, project: str, view: str) -> None:
    """Drop every vector table and the model record of a view (the view was deleted)."""
    for name in vector_tables(conn, project, view):
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    ensure_models_table(conn)
    conn.execute(f"DELETE FROM {MODELS} WHERE view = ?", (view,))


class VectorTable:
    """The vectors of one view under one model. Methods take the caller's connection (its transaction)."""

    def __init__(self, project: str, spec: EmbeddingSpec) -> None:
        self.spec = spec
        self.project = project
        self.name = table_prefix(project, spec.view) + spec.fingerprint

    def create(self, conn: Any) -> None:
        conn.execute(
            f'CREATE VIRTUAL TABLE IF NOT EXISTS "{self.name}" USING vec0('
            f"entity_key TEXT PRIMARY KEY, embedding float[{self.spec.dim}] distance_metric={self.spec.metric}, "
            "+text_hash TEXT, +version INTEGER)"
        )

    def exists(self, conn: Any) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (self.name,)).fetchone()
        return row is not None

    def drop_others(self, conn: Any) -> list[str]:
        """Drop this view's tables of other models; returns their names."""
        others = [t for t in vector_tables(conn, self.project, self.spec.view) if t != self.name]
        for name in others:
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        return others

    def lookup(self, conn: Any, keys: Sequence[bytes]) -> dict[bytes, StoredVector]:
        """Stored vectors by serialised entity key (absent keys are missing from the result)."""
        if not keys or not self.exists(conn):
            return {}
        out: dict[bytes, StoredVector] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = [k.hex() for k in keys[i : i + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            for key, text_hash, version, vector in conn.execute(
                f'SELECT entity_key, text_hash, version, embedding FROM "{self.name}" WHERE entity_key IN ({marks})',
                chunk,
            ):
                out[bytes.fromhex(key)] = StoredVector(text_hash, int(version), bytes(vector))
        return out

    def put(self, conn: Any, rows: Iterable[tuple[bytes, Any, str, int]]) -> None:
        """Upsert (key, vector, text hash, version) rows. vec0 has no upsert: delete, then insert."""
        items = [(k.hex(), as_blob(v), h, ver) for k, v, h, ver in rows]
        if not items:
            return
        self.create(conn)
        self.delete(conn, [bytes.fromhex(k) for k, *_ in items])
        conn.executemany(
            f'INSERT INTO "{self.name}" (entity_key, embedding, text_hash, version) VALUES (?, ?, ?, ?)',
            items,
        )

    def delete(self, conn: Any, keys: Sequence[bytes]) -> None:
        if keys and self.exists(conn):
            delete_keys(conn, self.name, keys)

    def search(self, conn: Any, query: Any, k: int) -> list[tuple[bytes, float, bytes]]:
        """The ``k`` nearest (key, distance, vector), nearest first."""
        if k <= 0 or not self.exists(conn):
            return []
        rows = conn.execute(
            f'SELECT entity_key, distance, embedding FROM "{self.name}" '
            "WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (as_blob(query), k),
        )
        return [(bytes.fromhex(key), float(distance), bytes(vector)) for key, distance, vector in rows]

    def count(self, conn: Any) -> int:
        if not self.exists(conn):
            return 0
        return int(conn.execute(f'SELECT count(*) FROM "{self.name}"').fetchone()[0])


def as_blob(vector: Any) -> bytes:
    """float32 bytes of a vector given as bytes, a list of floats or a numpy array."""
    if isinstance(vector, bytes | bytearray | memoryview):
        return bytes(vector)
    return np.asarray(vector, dtype=np.float32).tobytes()


def as_floats(blob: bytes) -> list[float]:
    return np.frombuffer(blob, dtype=np.float32).tolist()  # type: ignore[no-any-return]
