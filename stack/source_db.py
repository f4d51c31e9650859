"""Preparing a source database for CDC (``featurectl db init``, and ``stack up`` for the local one).

Additive and safe on a database that is already in use: it creates what is missing and changes
nothing that exists. An existing role keeps its password and attributes (``reset_passwords`` sets
the passwords of the platform's roles from settings; attributes are never changed, only reported);
the demo schema runs only when asked (the local stack asks); a publication gains the connector's
missing tables (``ALTER PUBLICATION ... ADD TABLE``), never loses any. ``plan`` only reads the
catalogs, so a dry run prints exactly the statements ``apply`` would execute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from connectors.capture import identity_fix, published_tables, publishes_via_root, table_shape, via_root_fix
from connectors.definition import ConnectorDefinition
from core.errors import ConfigError
from core.settings import Settings

logger = logging.getLogger(__name__)
SQL_DIR = Path(__file__).with_name("sql")
DEMO_SQL = SQL_DIR / "shop.sql"
CDC_SQL = SQL_DIR / "cdc.sql"
CDC_SCHEMA = "cdc"
# pg_advisory_lock key held while a plan is made and applied (any constant no other tool uses: "fctl").
INIT_LOCK = 0x6663746C
Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Step:
    """One statement: where it runs (cluster-wide or in the application database), as which role, why."""

    why: str
    statement: sql.Composed | sql.SQL
    in_app_db: bool
    as_role: str | None = None  # SET ROLE for the statement (the app owns what it creates)
    shown: sql.Composed | sql.SQL | None = None  # printed instead of ``statement`` (a password redacted)


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class SourceInit:
    """Plans and applies what CDC needs in ``settings.pg_database``; ``admin(db)`` is a superuser conninfo."""

    def __init__(
        self,
        settings: Settings,
        admin: Callable[[str], str],
        connector: ConnectorDefinition,
        demo_schema: bool = False,
        reset_passwords: bool = False,
    ) -> None:
        self.s = settings
        self.admin = admin
        self.connector = connector
        self.demo_schema = demo_schema
        self.reset_passwords = reset_passwords

    # --- planning: catalog reads only ----------------------------------------------------------------
    def plan(self) -> Plan:
        s, plan = self.s, Plan()
        with psycopg.connect(self.admin("postgres"), autocommit=True) as conn:
            self._plan_role(conn, plan, s.pg_app_user, "pg_app_password", replication=False)
            self._plan_role(conn, plan, s.debezium_user, "debezium_password", replication=True)
            db_exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (s.pg_database,)
            ).fetchone()
            if not db_exists:
                plan.steps.append(
                    Step(
                        f"database {s.pg_database} is missing",
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(s.pg_database), sql.Identifier(s.pg_app_user)
                        ),
                        in_app_db=False,
                    )
                )
        if not db_exists:
            self._plan_in_db(None, plan)
        else:
            with psycopg.connect(self.admin(s.pg_database), autocommit=True) as conn:
                self._plan_in_db(conn, plan)
        return plan

    def _plan_role(self, conn: Conn, plan: Plan, role: str, secret: str, replication: bool) -> None:
        row = conn.execute(
            "SELECT rolcanlogin, rolreplication, rolsuper FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
        ident = sql.Identifier(role)
        if row is None or self.reset_passwords:
            password = self.s.require_secret(secret)
            verb, attrs = (
                ("CREATE", " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE ") if row is None else ("ALTER", " ")
            )
            if row is None:
                attrs += "REPLICATION " if replication else "NOREPLICATION "
            template = verb + " ROLE {}" + (" WITH" + attrs if row is None else " WITH ") + "PASSWORD {}"
            plan.steps.append(
                Step(
                    f"role {role} is missing" if row is None else f"--reset-passwords: role {role}",
                    sql.SQL(template).format(ident, sql.Literal(password)),
                    in_app_db=False,
                    shown=sql.SQL(template).format(ident, sql.SQL("'***'")),
                )
            )
            return
        can_login, can_replicate, superuser = row
        if not can_login:
            plan.warnings.append(f"role {role} cannot log in: ALTER ROLE {role} LOGIN (not changed here)")
        if replication and not can_replicate:
            plan.warnings.append(
                f"role {role} lacks REPLICATION, which Debezium needs: ALTER ROLE {role} REPLICATION (not changed here)"
            )
        if superuser:
            plan.warnings.append(
                f"role {role} is a superuser: the platform needs far less (not changed here)"
            )

    def _plan_in_db(self, conn: Conn | None, plan: Plan) -> None:
        """Statements inside the application database; ``conn`` None: it does not exist yet (all needed)."""
        s = self.s
        dbz = sql.Identifier(s.debezium_user)
        if conn is None or not _one(
            conn, "SELECT has_database_privilege(%s, %s, 'CONNECT')", (s.debezium_user, s.pg_database)
        ):
            plan.steps.append(
                Step(
                    f"{s.debezium_user} may not connect to {s.pg_database}",
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(s.pg_database), dbz),
                    in_app_db=False,
                )
            )
        if self.demo_schema:
            plan.steps.append(
                Step(
                    "the demo schema (local stack)",
                    _template(DEMO_SQL, dbz),
                    in_app_db=True,
                    as_role=s.pg_app_user,
                )
            )
        plan.steps.append(
            Step(
                "Debezium's signal and heartbeat tables (created if missing)",
                _template(CDC_SQL, dbz),
                in_app_db=True,
                as_role=s.pg_app_user,
            )
        )
        captured = [t for t in self.connector.tables if not t.startswith(CDC_SCHEMA + ".")]
        demo_tables = {"public.customers", "public.products", "public.orders"} if self.demo_schema else set()
        missing = [
            t for t in captured if t not in demo_tables and (conn is None or not _table_exists(conn, t))
        ]
        if missing:
            raise ConfigError(
                f"{self.connector.path} captures {missing}, which do not exist in {s.pg_database}",
                "create them first, remove them from table.include.list, or for the demo tables run "
                "`featurectl db init --with-demo-schema`",
            )
        for table in captured:
            if table in demo_tables or (
                conn is not None
                and _one(conn, "SELECT has_table_privilege(%s, %s, 'SELECT')", (s.debezium_user, table))
            ):
                continue
            schema, name = table.split(".", 1)
            plan.steps.append(
                Step(
                    f"{s.debezium_user} must read {table} (snapshots)",
                    sql.SQL("GRANT USAGE ON SCHEMA {} TO {}; GRANT SELECT ON {} TO {}").format(
                        sql.Identifier(schema), dbz, sql.Identifier(schema, name), dbz
                    ),
                    in_app_db=True,
                )
            )
        self._plan_publication(conn, plan)

    def _plan_publication(self, conn: Conn | None, plan: Plan) -> None:
        steps, warnings = publication_steps(conn, self.connector)
        plan.steps += steps
        plan.warnings += warnings

    # --- applying -------------------------------------------------------------------------------------
    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Plan and apply inside this: one ``stack up``/``db init`` at a time per cluster.

        Two at once (bench runs, hosts starting together) would plan the same CREATE ROLE, and their
        GRANTs on one table update one catalog row: Postgres fails the second with "tuple concurrently
        updated" instead of waiting. The second waits on an advisory lock, then plans what is left.
        """
        with psycopg.connect(self.admin("postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (INIT_LOCK,))
            yield  # closing the session releases the lock, whatever happened inside

    def render(self, plan: Plan) -> list[str]:
        """The plan as SQL text (passwords redacted), for ``--dry-run``."""
        with psycopg.connect(self.admin("postgres")) as conn:
            out = []
            for step in plan.steps:
                text = (step.shown or step.statement).as_string(conn).strip()
                where = self.s.pg_database if step.in_app_db else "(cluster)"
                role = f"SET ROLE {step.as_role}; " if step.as_role else ""
                out.append(f"-- {step.why} [{where}]\n{role}{text}")
            return out

    def apply(self, plan: Plan) -> None:
        for step in plan.steps:
            db = self.s.pg_database if step.in_app_db else "postgres"
            with psycopg.connect(self.admin(db), autocommit=True) as conn:
                if step.as_role:
                    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(step.as_role)))
                conn.execute(step.statement)
            logger.info("postgres: %s: done", step.why)
        for warning in plan.warnings:
            logger.warning("postgres: %s", warning)


def publication_steps(conn: Conn | None, connector: ConnectorDefinition) -> tuple[list[Step], list[str]]:
    """Create the connector's publication, or add the tables it lacks; never remove one. Created by the
    superuser, so Debezium's role needs no table ownership (publication.autocreate.mode=disabled).

    A new publication publishes partitioned tables through their root (``publish_via_partition_root``):
    changes then carry the captured table's name whatever partition holds the row. An existing one is
    switched to it when this adds a partitioned table to it (nothing read it through the leaves yet);
    otherwise a partitioned table published through its leaves is reported with the exact fix, since
    switching changes the topics of what it already publishes."""
    name = connector.publication_name
    tables = connector.tables
    via_root = publishes_via_root(conn, name) if conn is not None else None
    has = published_tables(conn, name) if conn is not None and via_root is not None else set()
    if conn is not None:
        # Publishing a table without a replica identity breaks its application's UPDATEs and DELETEs.
        unsafe = [t for t in tables if t not in has and table_shape(conn, t).updates_refused]
        if unsafe:
            raise ConfigError(
                f"not publishing {unsafe}: they have no replica identity (no primary key), and Postgres "
                "refuses every UPDATE and DELETE on a published table without one",
                "give each a replica identity first: " + "; ".join(identity_fix(t) for t in unsafe),
            )
    if via_root is None:
        create = sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
            sql.Identifier(name), _tables(tables)
        )
        return [Step(f"publication {name} is missing", create, in_app_db=True)], []
    assert conn is not None
    missing = [t for t in tables if t not in has]
    steps = []
    if missing:
        add = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(name), _tables(missing))
        steps.append(Step(f"publication {name} lacks {missing} (its other tables stay)", add, in_app_db=True))
    warnings = []
    partitioned = [t for t in tables if table_shape(conn, t).partitioned]
    if partitioned and not via_root:
        if set(partitioned) <= set(missing):
            steps.append(
                Step(
                    f"publication {name} must publish the partitioned {partitioned} through their root",
                    sql.SQL(via_root_fix(name)),
                    in_app_db=True,
                )
            )
        else:
            warnings.append(
                f"publication {name} publishes the partitioned {partitioned} under their partitions' names, "
                f"which Debezium drops (not changed here, it changes their topics): {via_root_fix(name)}"
            )
    extra = sorted(has - set(tables))
    if extra:
        warnings.append(f"publication {name} also publishes {extra} (left as they are)")
    return steps, warnings


def _template(path: Path, debezium_user: sql.Identifier) -> sql.Composed:
    return sql.SQL(path.read_text()).format(debezium_user=debezium_user)


def _tables(tables: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in tables)


def _one(conn: Conn, query: str, params: tuple[object, ...]) -> object:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _table_exists(conn: Conn, table: str) -> bool:
    return _one(conn, "SELECT to_regclass(%s) IS NOT NULL", (table,)) is True
