"""Can the stream carry a view's table at all? The source-side checks shared by ``feast-apply``, ``health``
and ``db init``: each problem names the table and the exact fix.

A captured table's changes reach Kafka only if all of these hold:
- the connector's ``table.include.list`` names it, and the connector's publication publishes it;
- a partitioned table is published through its root (``publish_via_partition_root = true``): otherwise
  pgoutput names each change after its leaf partition, which the include list does not name, and
  Debezium drops the change without a word (no topic is created);
- it is not itself a partition (its changes then come under the root's name, or the leaf's: never both);
- a feature is not bound to a generated column: Postgres before 18 does not publish generated columns,
  so the stream can never carry its value (the connector excludes them, connectors/deploy.py);
- the table has a replica identity: a published table without one (no primary key under REPLICA
  IDENTITY DEFAULT, or NOTHING) makes Postgres refuse every UPDATE and DELETE on it, breaking the
  application that owns it; and the identity's columns include the view's key columns, since a delete
  carries only those (else its delete cannot name the entity and is dead-lettered).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from connectors.definition import ConnectorDefinition
from connectors.pgtypes import KeyColumn, key_problems
from core.errors import ConfigError

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class CaptureProblem:
    table: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}"


@dataclass(frozen=True, slots=True)
class TableShape:
    """What the catalogs say about one table."""

    exists: bool
    partitioned: bool = False  # relkind 'p': a partitioned root
    partition_of: str | None = None  # the root, when the table is itself a partition
    generated: tuple[str, ...] = ()  # stored generated columns
    identity: str = "d"  # relreplident: d(efault: the primary key), f(ull), i(ndex), n(othing)
    identity_columns: tuple[str, ...] | None = ()  # what a delete's before-image holds; None: every column

    @property
    def updates_refused(self) -> bool:
        """Postgres refuses UPDATE and DELETE on a published table without a replica identity."""
        return self.exists and (
            self.identity == "n" or (self.identity in ("d", "i") and not self.identity_columns)
        )


def table_shape(conn: Conn, table: str) -> TableShape:
    row = conn.execute(
        "SELECT c.relkind = 'p', c.relispartition, "
        "  (SELECT format('%%I.%%I', rn.nspname, r.relname) FROM pg_inherits i "
        "     JOIN pg_class r ON r.oid = i.inhparent JOIN pg_namespace rn ON rn.oid = r.relnamespace "
        "   WHERE i.inhrelid = c.oid), "
        "  ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attgenerated = 's' "
        "        AND NOT a.attisdropped ORDER BY a.attnum), "
        "  c.relreplident, "
        "  ARRAY(SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = c.oid "
        "        AND a.attnum = ANY(x.indkey) WHERE x.indrelid = c.oid "
        "        AND ((c.relreplident = 'd' AND x.indisprimary) OR (c.relreplident = 'i' AND x.indisreplident))) "
        "FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    if row is None:
        return TableShape(exists=False)
    partitioned, is_partition, parent, generated, identity, identity_columns = row
    assert isinstance(generated, list) and isinstance(identity_columns, list)
    return TableShape(
        True,
        bool(partitioned),
        str(parent) if is_partition and parent else None,
        tuple(map(str, generated)),
        str(identity),
        None if identity == "f" else tuple(map(str, identity_columns)),
    )


def publishes_via_root(conn: Conn, publication: str) -> bool | None:
    """The publication's ``publish_via_partition_root``; None if it does not exist."""
    row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    return None if row is None else bool(row[0])


def published_tables(conn: Conn, publication: str) -> set[str]:
    """Tables named by the publication itself (``pg_publication_rel``), as ``schema.table``.

    Not ``pg_publication_tables``: without ``publish_via_partition_root`` that view lists a partitioned
    table's leaves instead of the table that was added."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_publication p "
        "JOIN pg_publication_rel pr ON pr.prpubid = p.oid JOIN pg_class c ON c.oid = pr.prrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = %s "
        "UNION SELECT n.nspname || '.' || c.relname FROM pg_publication p "
        "JOIN pg_publication_namespace pn ON pn.pnpubid = p.oid JOIN pg_class c ON c.relnamespace = pn.pnnspid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = %s AND c.relkind IN ('r', 'p') "
        "UNION SELECT schemaname || '.' || tablename FROM pg_publication_tables t JOIN pg_publication p "
        "ON p.pubname = t.pubname WHERE p.pubname = %s AND p.puballtables",
        (publication, publication, publication),
    )
    return {str(r[0]) for r in rows}


def via_root_fix(publication: str) -> str:
    return (
        sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)")
        .format(sql.Identifier(publication))
        .as_string(None)
    )


IDENTITIES = {"d": "DEFAULT", "f": "FULL", "i": "USING INDEX", "n": "NOTHING"}


def identity_fix(table: str) -> str:
    name = sql.Identifier(*table.split(".", 1)).as_string(None)
    return (
        f"ALTER TABLE {name} REPLICA IDENTITY FULL (or add a primary key, or REPLICA IDENTITY USING INDEX "
        "of a unique index over the views' key columns)"
    )


def capture_problems(
    conn: Conn,
    definition: ConnectorDefinition,
    columns: dict[str, set[str]],
    keys: dict[str, set[str]] | None = None,
) -> list[CaptureProblem]:
    """Why changes of the tables in ``columns`` (table -> the columns views read) would not reach their
    views; ``keys``: table -> the source columns of the views' join keys. Empty when every table is captured
    right. Reads catalogs only."""
    keys = keys or {}
    publication = definition.publication_name
    via_root = publishes_via_root(conn, publication)
    published = published_tables(conn, publication) if via_root is not None else set()
    captured = set(definition.tables)
    problems: list[CaptureProblem] = []
    for table in sorted(columns):
        shape = table_shape(conn, table)
        if not shape.exists:
            problems.append(
                CaptureProblem(table, f"{table} does not exist", "create it, or fix the view's cdc.table")
            )
            continue
        if shape.partition_of:
            problems.append(
                CaptureProblem(
                    table,
                    f"{table} is a partition of {shape.partition_of}; its changes are published under one "
                    "name only",
                    f"capture the partitioned table {shape.partition_of} (cdc.table and table.include.list)",
                )
            )
        if table not in captured:
            problems.append(
                CaptureProblem(
                    table,
                    f"connector {definition.name} does not capture {table}",
                    f"add it to table.include.list in {definition.path}, then `featurectl db init` and "
                    "`featurectl connector deploy`",
                )
            )
        if via_root is None:
            problems.append(
                CaptureProblem(table, f"publication {publication} does not exist", "run `featurectl db init`")
            )
        elif table not in published:
            problems.append(
                CaptureProblem(
                    table,
                    f"publication {publication} does not publish {table}",
                    "run `featurectl db init` (it adds the connector's tables to the publication)",
                )
            )
        elif shape.partitioned and not via_root:
            problems.append(
                CaptureProblem(
                    table,
                    f"{table} is partitioned and publication {publication} publishes its changes under the "
                    "partitions' names, which Debezium drops",
                    via_root_fix(publication),
                )
            )
        if shape.updates_refused:
            problems.append(
                CaptureProblem(
                    table,
                    f"{table} has no replica identity (no primary key, REPLICA IDENTITY "
                    f"{IDENTITIES[shape.identity]}): once published, Postgres refuses every UPDATE and DELETE "
                    "on it",
                    identity_fix(table),
                )
            )
        elif keys.get(table) and shape.identity_columns is not None:
            unseen = sorted(keys[table] - set(shape.identity_columns))
            if unseen:
                problems.append(
                    CaptureProblem(
                        table,
                        f"a delete from {table} carries only its replica identity "
                        f"({', '.join(shape.identity_columns)}), not the views' key column(s) "
                        f"{', '.join(unseen)}: such deletes cannot name their entity and are dead-lettered",
                        identity_fix(table),
                    )
                )
        bound = sorted(set(shape.generated) & columns[table])
        if bound:
            problems.append(
                CaptureProblem(
                    table,
                    f"{table}.{', '.join(bound)} is a generated column, which Postgres's logical replication "
                    "does not publish: the stream can never carry it",
                    "compute it in the view from the columns it is generated from, or drop the feature",
                )
            )
    return problems


def source_problems(
    conninfo: str,
    definition: ConnectorDefinition,
    columns: dict[str, set[str]],
    keys: dict[str, set[str]] | None = None,
    key_columns: list[KeyColumn] | None = None,
) -> list[str]:
    """``capture_problems``, and the ``key_problems`` of ``key_columns`` (connectors/pgtypes.py), on a new
    connection; ConfigError naming the fix when Postgres is unreachable."""
    if not columns:
        return []
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            problems = [str(p) for p in capture_problems(conn, definition, columns, keys)]
            return problems + key_problems(conn, key_columns or [])
    except psycopg.OperationalError as exc:
        raise ConfigError(
            f"cannot check the views' tables in Postgres: {str(exc).strip()}",
            "start it (`featurectl stack up`) or fix FEATURECTL_PG_*; `featurectl feast-apply "
            "--no-source-check` applies without the check",
        ) from None
