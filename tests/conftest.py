"""Fixtures both test levels share: the real Postgres + pgvector online store, started once per session."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from core.settings import PROJECT_ROOT, Settings, ensure_secrets_file, load_settings
from stack.launcher import GENERATED_SECRETS
from stack.milvus import MilvusServer
from stack.online_postgres import OnlinePostgres
from stack.redis import RedisServer

# pytest-xdist runs the suite in worker processes (dev.sh: -n 2), each with its own folder and ports (1000
# apart), so its own stack and servers: the tests of two workers never meet. The first keeps the defaults.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and int(_WORKER[2:]) > 0:
    os.environ.setdefault("PYTEST_FEATURECTL_DIR", f".stack-test-{_WORKER}")
    os.environ.setdefault("PYTEST_FEATURECTL_PORT_OFFSET", str(1000 * int(_WORKER[2:])))

# Under the same 0700 parent as the integration stack (tests/integration/conftest.py): the binaries
# and the cluster must work where the postgres OS user cannot traverse the clone.
# Ports and directories overridable, so lanes of tests/run.py (or a second checkout) run beside each other:
# PYTEST_FEATURECTL_DIR moves the folder, PYTEST_FEATURECTL_PORT_OFFSET every port, as for the stack.
_TEST_DIR = PROJECT_ROOT / os.environ.get("PYTEST_FEATURECTL_DIR", ".stack-test")
_OFFSET = int(os.environ.get("PYTEST_FEATURECTL_PORT_OFFSET", "0"))
ONLINE_DATA = _TEST_DIR / "online"
ONLINE_PORT = int(os.environ.get("PYTEST_FEATURECTL_ONLINE_PORT", str(26433 + _OFFSET)))
REDIS_DATA = _TEST_DIR / "redis"
REDIS_PORT = int(os.environ.get("PYTEST_FEATURECTL_REDIS_PORT", str(26380 + _OFFSET)))
MILVUS_DATA = _TEST_DIR / "milvus"
MILVUS_PORT = int(os.environ.get("PYTEST_FEATURECTL_MILVUS_PORT", str(29531 + _OFFSET)))


def without_aggregation_views(repo: Path) -> None:
    """For a store whose Feast reader does not compute aggregation views: its user declares none
    (`featurectl feast-apply` refuses them there; docs/aggregations.md)."""
    path = repo / "orders.py"
    text = path.read_text()
    marker = "# Each change of an order as the aggregation view sees it"
    if marker in text:
        path.write_text(text[: text.index(marker)])


@dataclass
class OnlinePg:
    service: OnlinePostgres
    settings: Settings
    password: str

    def yaml(self, schema: str) -> str:
        """An ``online_store:`` block for feature_store.yaml writing to ``schema`` (created if missing)."""
        s = self.settings
        with psycopg.connect(self.service.store_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        return (
            "online_store:\n"
            "  type: stores.postgres.feast.PgVectorOnlineStore\n"
            f"  host: 127.0.0.1\n  port: {s.online_pg_port}\n  database: {s.online_pg_database}\n"
            f"  db_schema: {schema}\n  user: {s.online_pg_user}\n"
            "  password: ${FEATURECTL_ONLINE_PG_PASSWORD}\n  sslmode: disable\n  vector_enabled: true\n"
        )

    def use_in(self, repo: Path, schema: str) -> None:
        """Point ``repo``'s feature_store.yaml at this store (schema ``schema``)."""
        path = repo / "feature_store.yaml"
        text = re.sub(r"online_store:\n(?:[ #].*\n)+", self.yaml(schema), path.read_text())
        path.write_text(text)

    def empty(self, schema: str) -> None:
        """Delete every row of every table in ``schema`` (tables and indexes stay)."""
        with psycopg.connect(self.service.store_conninfo(), autocommit=True) as conn:
            # The declared models stay, as `feast apply` left them.
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> 'featurectl_embeddings'",
                (schema,),
            ).fetchall()
            for (table,) in tables:
                conn.execute(
                    sql.SQL("DELETE FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                )


@pytest.fixture(scope="session")
def online_pg() -> Iterator[OnlinePg]:
    parent = ONLINE_DATA.parent
    parent.mkdir(exist_ok=True)
    parent.chmod(0o700)
    settings = load_settings(data_dir=ONLINE_DATA, online_pg_port=ONLINE_PORT)
    service = OnlinePostgres(settings)
    service.stop()  # a previous run's leftovers
    service.wipe()
    shutil.rmtree(ONLINE_DATA, ignore_errors=True)
    ONLINE_DATA.mkdir()
    secrets = ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    service.start()
    service.bootstrap()
    password = secrets["online_pg_password"]
    # feature_store.yaml reads it as ${FEATURECTL_ONLINE_PG_PASSWORD}; subprocesses inherit it.
    os.environ["FEATURECTL_ONLINE_PG_PASSWORD"] = password
    yield OnlinePg(service, settings, password)
    service.stop()
    if service.log_file.exists():
        shutil.copy(service.log_file, ONLINE_DATA / "postgres.log")
    service.wipe()


@dataclass
class LocalRedis:
    server: RedisServer

    def yaml(self, db: int) -> str:
        """An ``online_store:`` block for feature_store.yaml using Redis database ``db``."""
        return (
            "online_store:\n  type: stores.redis.feast.RedisOnlineStore\n"
            f"  connection_string: 127.0.0.1:{self.server.settings.redis_port},db={db},"
            "password=${FEATURECTL_REDIS_PASSWORD}\n"
        )

    def use_in(self, repo: Path, db: int) -> None:
        path = repo / "feature_store.yaml"
        path.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", self.yaml(db), path.read_text()))
        without_aggregation_views(repo)

    def flush(self, db: int) -> None:
        import redis

        password = self.server.settings.require_secret("redis_password")
        with redis.Redis(port=self.server.settings.redis_port, db=db, password=password) as client:
            client.flushdb()


@pytest.fixture(scope="session")
def local_redis() -> Iterator[LocalRedis]:
    """Debian's redis-server on a port of its own, for the session (requirepass from its secrets file)."""
    parent = REDIS_DATA.parent
    parent.mkdir(exist_ok=True)
    parent.chmod(0o700)
    settings = load_settings(data_dir=REDIS_DATA, redis_port=REDIS_PORT)
    server = RedisServer(settings)
    server.stop()
    shutil.rmtree(REDIS_DATA, ignore_errors=True)
    REDIS_DATA.mkdir()
    secrets = ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    server.start()
    os.environ["FEATURECTL_REDIS_PASSWORD"] = secrets["redis_password"]
    yield LocalRedis(server)
    server.stop()


@dataclass
class LocalMilvus:
    server: MilvusServer

    def yaml(self, database: str) -> str:
        """An ``online_store:`` block for feature_store.yaml using Milvus database ``database`` (created)."""
        client = self.server.client()
        try:
            if database not in client.list_databases():
                client.create_database(database)
        finally:
            client.close()
        return (
            "online_store:\n  type: stores.milvus.feast.MilvusOnlineStore\n"
            f"  host: http://127.0.0.1\n  port: {self.server.settings.milvus_port}\n"
            f"  db_name: {database}\n  vector_enabled: true\n"
        )

    def use_in(self, repo: Path, database: str) -> None:
        path = repo / "feature_store.yaml"
        path.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", self.yaml(database), path.read_text()))
        without_aggregation_views(repo)

    def empty(self, database: str) -> None:
        """Every row of every collection of ``database`` deleted (the collections stay, as applied)."""
        client = self.server.client(database)
        try:
            for name in client.list_collections():
                key = next(
                    f["name"] for f in client.describe_collection(name)["fields"] if f.get("is_primary")
                )
                client.delete(name, filter=f'{key} != ""')
        finally:
            client.close()


@pytest.fixture(scope="session")
def local_milvus() -> Iterator[LocalMilvus]:
    """milvus-lite's server on a port of its own, for the session (stack/milvus.py)."""
    parent = MILVUS_DATA.parent
    parent.mkdir(exist_ok=True)
    parent.chmod(0o700)
    settings = load_settings(data_dir=MILVUS_DATA, milvus_port=MILVUS_PORT)
    server = MilvusServer(settings)
    server.stop()
    shutil.rmtree(MILVUS_DATA, ignore_errors=True)
    MILVUS_DATA.mkdir()
    server.start()
    yield LocalMilvus(server)
    server.stop()


_SUMMARIES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the lines tests recorded as ``summary`` (record_property); pytest-xdist brings workers' here."""
    if report.when == "call":
        _SUMMARIES.extend(str(value) for name, value in report.user_properties if name == "summary")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print them at the end of the run: figures a check measured (the demo's install size)."""
    for line in _SUMMARIES:
        terminalreporter.write_line(line)
