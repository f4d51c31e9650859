"""The processor's bookkeeping tables in a Postgres online store, next to Feast's feature tables.

Same meaning as the SQLite store's (onlinestore/sqlite.py): per entity the version of the last
change applied, deletes included (tombstones); a TRUNCATE barrier per view; the epoch of each
partition's owner (streams/fencing.py); the model each vector view declared at its last ``feast
apply``; and per entity the hash of the text its stored vector was computed from. Feast never reads
them. They live in the store's schema (one Feast project per schema).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

VERSIONS = "featurectl_versions"
BARRIERS = "featurectl_barriers"
FENCES = "featurectl_fences"
MODELS = "featurectl_embeddings"
TEXTS = "featurectl_vector_texts"

DDL = f"""
CREATE TABLE IF NOT EXISTS {VERSIONS} (
    view TEXT NOT NULL, entity_key BYTEA NOT NULL, version BIGINT NOT NULL,
    version_minor INTEGER NOT NULL, event_us BIGINT, deleted BOOLEAN NOT NULL, join_keys TEXT NOT NULL,
    PRIMARY KEY (view, entity_key));
CREATE TABLE IF NOT EXISTS {BARRIERS} (
    view TEXT PRIMARY KEY, version BIGINT NOT NULL, version_minor INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS {FENCES} (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, epoch BIGINT NOT NULL, owner TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS {MODELS} (
    view TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, model TEXT NOT NULL, backend TEXT NOT NULL,
    dim INTEGER NOT NULL, declared_at TIMESTAMPTZ NOT NULL, backfilled_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS {TEXTS} (
    view TEXT NOT NULL, entity_key BYTEA NOT NULL, fingerprint TEXT NOT NULL, text_hash TEXT NOT NULL,
    version BIGINT NOT NULL, PRIMARY KEY (view, entity_key));
"""


def ensure_tables(cur: Any) -> None:
    """Create the bookkeeping tables if missing (in the connection's search_path schema)."""
    cur.execute(DDL)


def vector_index_name(table: str) -> str:
    return f"{table}_hnsw"


def vector_expr(dim: int) -> sql.Composable:
    """The indexed expression: Feast's ``vector`` column (no dimension) cast to the model's dimension."""
    return sql.SQL("vector_value::vector({})").format(sql.Literal(dim))


# Feast's metric names (embeddings/spec.py METRICS values) -> pgvector's operator and operator class.
OPERATORS = {
    "cosine": ("<=>", "vector_cosine_ops"),
    "l2": ("<->", "vector_l2_ops"),
    "l1": ("<+>", "vector_l1_ops"),
}
