"""The processor's bookkeeping tables in a Postgres online store, next to Feast's feature tables.

Same meaning as the SQLite store's (stores/sqlite/db.py): per entity the version of the last
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
CONTRIBUTIONS = "featurectl_contributions"  # aggregation views' (stores/contributions.py)

DDL = f"""
CREATE TABLE IF NOT EXISTS {VERSIONS} (
    view TEXT NOT NULL, entity_key BYTEA NOT NULL, version BIGINT NOT NULL,
    version_minor BIGINT NOT NULL, event_us BIGINT, deleted BOOLEAN NOT NULL, join_keys TEXT NOT NULL,
    PRIMARY KEY (view, entity_key));
CREATE TABLE IF NOT EXISTS {BARRIERS} (
    view TEXT PRIMARY KEY, version BIGINT NOT NULL, version_minor BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {FENCES} (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, epoch BIGINT NOT NULL, owner TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS {MODELS} (
    view TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, model TEXT NOT NULL, backend TEXT NOT NULL,
    dim INTEGER NOT NULL, declared_at TIMESTAMPTZ NOT NULL, backfilled_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS {TEXTS} (
    view TEXT NOT NULL, entity_key BYTEA NOT NULL, fingerprint TEXT NOT NULL, text_hash TEXT NOT NULL,
    version BIGINT NOT NULL, PRIMARY KEY (view, entity_key));
CREATE TABLE IF NOT EXISTS {CONTRIBUTIONS} (
    view TEXT NOT NULL, source_row TEXT NOT NULL, agg_key TEXT, event_us BIGINT, version BIGINT NOT NULL,
    version_minor BIGINT NOT NULL, vals TEXT NOT NULL, PRIMARY KEY (view, source_row));
CREATE INDEX IF NOT EXISTS {CONTRIBUTIONS}_by_key ON {CONTRIBUTIONS} (view, agg_key, event_us);
"""


def ensure_tables(cur: Any) -> None:
    """Create the bookkeeping tables if missing (in the connection's search_path schema), and widen a
    ``version_minor`` column created 32-bit by an earlier release to 64 bits.

    A version's minor part is a WAL position (stores/ordering.py): past 2 GiB of WAL, which every
    production database passes, a 32-bit column refused every write ("integer out of range") and the
    processor sent each change to the dead-letter topic. The ALTER rewrites the table once."""
    cur.execute(DDL)
    cur.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ANY(%s) AND column_name = 'version_minor' AND data_type = 'integer'",
        ([VERSIONS, BARRIERS, CONTRIBUTIONS],),
    )
    for (table,) in cur.fetchall():
        cur.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN version_minor TYPE BIGINT").format(sql.Identifier(table))
        )


def vector_index_name(table: str) -> str:
    """The HNSW index of a view's distinct vectors (on ``distinct_vectors_table(table)``)."""
    return f"{table}__vectors_hnsw"


def legacy_vector_index_name(table: str) -> str:
    """Where the HNSW index was before: over the feature table's vector rows, duplicates included."""
    return f"{table}_hnsw"


def vector_hash_index(table: str) -> str:
    """The index finding a view's entities by vector hash (``featurectl_vector_hash``: md5 of the vector's text).

    The hash is a plpgsql function declared expensive (COST 10000): as a bare ``md5(vector_value::text)``
    the planner costed it like an addition and, on a small table, hashed every vector row for each of the k
    nearest instead of looking them up (300 products: 50 ms a search, against ~1 ms)."""
    return f"{table}__vector_key"


def distinct_vectors_table(table: str) -> str:
    """One row per distinct vector of a view's feature table ``table``: what the HNSW index is built on.

    Why: texts repeat (catalogues), and an HNSW graph over many identical vectors (every rewrite of an
    unchanged vector adds another entry) loses its way: a unique vector among them was not found even at
    ``ef_search`` 1000, while a sequential scan put it first. Indexed once per distinct vector, the graph
    stays navigable; a search takes the nearest distinct vectors, then every entity holding each.
    """
    return f"{table}__vectors"


def vector_sync_ddl(table: str, field: str, dim: int, vector_type: str = "vector") -> sql.Composed:
    """The trigger keeping ``distinct_vectors_table(table)`` equal to the distinct vectors ``table`` holds,
    whoever writes it (the processor, re-embedding, Feast itself), and the index a search joins back by.
    The distinct vectors are stored as ``vector_type`` (``VECTOR_TYPES``); the feature table keeps Feast's
    full-precision ``vector``.

    A vector is keyed by the md5 of its text form (``VECTOR_HASH``). A transaction-level advisory lock per key
    serialises the last holder's removal against a new holder's arrival, so a vector in use is never dropped."""
    t, vt = sql.Identifier(table), sql.Identifier(distinct_vectors_table(table))
    fn = sql.Identifier(f"{table}__vectors_sync")
    if vector_type not in VECTOR_TYPES:
        raise ValueError(f"vector_type {vector_type!r}: use one of {', '.join(VECTOR_TYPES)}")
    values = {"t": t, "vt": vt, "fn": fn, "field": sql.Literal(field), "dim": sql.Literal(dim),
              "type": sql.SQL(vector_type),
              "hash_index": sql.Identifier(vector_hash_index(table)),
              "old_hash_index": sql.Identifier(f"{table}__vector_hash")}  # fmt: skip
    return sql.SQL(
        """
CREATE TABLE IF NOT EXISTS {vt} (vec_hash uuid PRIMARY KEY, vector {type}({dim}) NOT NULL);
CREATE OR REPLACE FUNCTION featurectl_vector_hash(v anyelement) RETURNS uuid LANGUAGE plpgsql
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 AS $$ BEGIN RETURN md5(v::text)::uuid; END $$;
CREATE INDEX IF NOT EXISTS {hash_index} ON {t} (featurectl_vector_hash(vector_value)) WHERE feature_name = {field};
DROP INDEX IF EXISTS {old_hash_index};
CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql
-- The store's schema, whatever the writing session's search_path.
SET search_path FROM CURRENT AS $$
DECLARE
    old_hash uuid;
    new_hash uuid;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM {vt};
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.feature_name = {field} AND OLD.vector_value IS NOT NULL THEN
        old_hash := md5(OLD.vector_value::text)::uuid;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.feature_name = {field} AND NEW.vector_value IS NOT NULL THEN
        new_hash := md5(NEW.vector_value::text)::uuid;
    END IF;
    IF new_hash IS NOT DISTINCT FROM old_hash THEN
        RETURN NULL;  -- an unchanged vector rewritten: nothing to do (and no new index entry)
    END IF;
    IF new_hash IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(new_hash::text, 0));
        INSERT INTO {vt} (vec_hash, vector) VALUES (new_hash, NEW.vector_value::{type}({dim}))
            ON CONFLICT (vec_hash) DO NOTHING;
    END IF;
    IF old_hash IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(old_hash::text, 0));
        IF NOT EXISTS (SELECT 1 FROM {t} WHERE feature_name = {field}
                       AND featurectl_vector_hash(vector_value) = old_hash) THEN
            DELETE FROM {vt} WHERE vec_hash = old_hash;
        END IF;
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS featurectl_vectors_sync ON {t};
CREATE TRIGGER featurectl_vectors_sync AFTER INSERT OR UPDATE OR DELETE ON {t}
    FOR EACH ROW EXECUTE FUNCTION {fn}();
DROP TRIGGER IF EXISTS featurectl_vectors_truncate ON {t};
CREATE TRIGGER featurectl_vectors_truncate AFTER TRUNCATE ON {t}
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
INSERT INTO {vt} (vec_hash, vector)
    SELECT DISTINCT ON (1) md5(vector_value::text)::uuid, vector_value::{type}({dim}) FROM {t}
    WHERE feature_name = {field} AND vector_value IS NOT NULL
    ON CONFLICT (vec_hash) DO NOTHING;
"""
    ).format(**values)


def drop_vector_sync(table: str, table_exists: bool = True) -> sql.Composed:
    """Remove the distinct vectors, their trigger and indexes (the view has no embedding, or is gone: then
    its triggers and indexes went with its table)."""
    on_table = (
        "DROP TRIGGER IF EXISTS featurectl_vectors_sync ON {t}; "
        "DROP TRIGGER IF EXISTS featurectl_vectors_truncate ON {t}; "
        if table_exists
        else ""
    )
    return sql.SQL(
        on_table
        + "DROP FUNCTION IF EXISTS {fn}(); DROP TABLE IF EXISTS {vt}; DROP INDEX IF EXISTS {hash_index}; "
        "DROP INDEX IF EXISTS {old_hash_index}; DROP INDEX IF EXISTS {legacy}"
    ).format(
        t=sql.Identifier(table),
        fn=sql.Identifier(f"{table}__vectors_sync"),
        vt=sql.Identifier(distinct_vectors_table(table)),
        hash_index=sql.Identifier(vector_hash_index(table)),
        old_hash_index=sql.Identifier(f"{table}__vector_hash"),
        legacy=sql.Identifier(legacy_vector_index_name(table)),
    )


# Feast's metric names (embeddings/spec.py METRICS values) -> pgvector's operator and operator class suffix
# (the class is ``<vector type>_<suffix>``: vector_cosine_ops, halfvec_cosine_ops).
OPERATORS = {
    "cosine": ("<=>", "cosine_ops"),
    "l2": ("<->", "l2_ops"),
    "l1": ("<+>", "l1_ops"),
    "ip": ("<#>", "ip_ops"),  # the negative inner product
}

# What the HNSW index navigates by: the vectors (``none``) or one bit per dimension (``binary``, re-ranked exactly).
QUANTIZATIONS = ("none", "binary")


def vector_index_ddl(
    table: str, dim: int, metric: str, vector_type: str, quantization: str, m: int, ef_construction: int
) -> sql.Composed:
    """The HNSW index of ``distinct_vectors_table(table)`` (``vector_index_name``), if missing: over the vectors
    (``vector_type``'s operator class for ``metric``) or, ``binary``, over their sign bits (pgvector's
    ``binary_quantize``, Hamming distance), the expression ``search_query`` orders by."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    _, ops = OPERATORS[metric]
    column = (
        sql.SQL("(binary_quantize(vector)::bit({}))").format(sql.Literal(dim))
        if quantization == "binary"
        else sql.SQL("vector")
    )
    opclass = "bit_hamming_ops" if quantization == "binary" else f"{vector_type}_{ops}"
    return sql.SQL(
        "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})"
    ).format(
        sql.Identifier(vector_index_name(table)),
        sql.Identifier(distinct_vectors_table(table)),
        column,
        sql.SQL(opclass),
        sql.Literal(m),
        sql.Literal(ef_construction),
    )


def vector_index_quantization(cur: Any, table: str) -> str | None:
    """How the view's HNSW index was built (``QUANTIZATIONS``), or None when there is none."""
    cur.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
        (vector_index_name(table),),
    )
    row = cur.fetchone()
    return None if row is None else ("binary" if "binary_quantize" in row[0] else "none")


def external_vector_indexes(cur: Any, table: str) -> list[tuple[str, str]]:
    """(name, ``CREATE INDEX`` statement) of each index on ``distinct_vectors_table(table)`` the plugin did not
    make (neither the primary key nor ``vector_index_name``): indexes a DBA created, to re-create when the
    plugin rebuilds the table. Empty when the table does not exist."""
    cur.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary AND c.relname <> %s ORDER BY c.relname",
        (sql.Identifier(distinct_vectors_table(table)).as_string(None), vector_index_name(table)),
    )
    return [(str(name), str(definition)) for name, definition in cur.fetchall()]


# How the HNSW index's copy of each distinct vector is stored: pgvector's 32-bit ``vector`` or 16-bit
# ``halfvec`` (half the index's pages; distances to ~3 significant digits).
VECTOR_TYPES = ("vector", "halfvec")


def distinct_vectors_type(cur: Any, table: str) -> str | None:
    """The type of ``distinct_vectors_table(table)``'s vectors as created (``vector``, ``halfvec``), or None
    when the table does not exist."""
    cur.execute(
        "SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'vector' AND NOT a.attisdropped",
        (sql.Identifier(distinct_vectors_table(table)).as_string(None),),
    )
    row = cur.fetchone()
    return None if row is None else str(row[0])
