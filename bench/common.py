"""Shared set-up for benchmarks: a table of their own, a feature repo copy reading it, a connector, cleanup."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from connectors.definition import ConnectorDefinition, load_definition
from connectors.deploy import remove
from core.settings import PROJECT_ROOT, Settings, load_settings
from stack.launcher import LocalStack
from stack.postgres import Postgres, ensure_publication
from stores.repository import copy_repo


def setup(
    root: Path, name: str, like: str, views_file: str, tags_before: str
) -> tuple[Settings, Postgres, ConnectorDefinition]:
    """Table ``name`` shaped like ``like``; the repo copy's view whose tags start ``tags_before`` reads it."""
    settings = load_settings()
    LocalStack(settings).up()
    pg = Postgres(settings)
    with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(name), sql.Identifier(like)
            )
        )
        conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(name)))
    settings, definition = repo_and_connector(settings, pg, root, name)
    views = root / "feature_repo" / views_file
    text = views.read_text()
    assert text.count(tags_before) == 1, f"{tags_before!r} must appear once in {views_file}"
    views.write_text(text.replace(tags_before, tags_before.replace(f"public.{like}", f"public.{name}")))
    return settings, pg, definition


def repo_and_connector(
    settings: Settings, pg: Postgres, root: Path, name: str, signals: bool = False
) -> tuple[Settings, ConnectorDefinition]:
    """A copy of the feature repo under ``root``, a connector definition and publication over table ``name``
    (and the signal table with ``signals``), and settings pointing at both, with a DLQ and group of its own."""
    copy_repo(PROJECT_ROOT / "feature_repo", root / "feature_repo")
    definition = load_definition().derive(name, [f"public.{name}"], root / "connector.json", signals)
    with psycopg.connect(pg.admin_conninfo(settings.pg_database), autocommit=True) as conn:
        ensure_publication(conn, definition)
    settings = settings.model_copy(
        update={
            "feature_repo": root / "feature_repo",
            "dlq_topic": f"dlq.{name}",
            "processor_group": f"{name}-bench",
        }
    )
    return settings, definition


def use_parquet_history(repo: Path) -> None:
    """Declare every view's history a Parquet directory instead of a Delta table (the old layout)."""
    for module in repo.glob("*.py"):
        lines = module.read_text().splitlines()
        module.write_text("\n".join(line for line in lines if "DeltaFormat()" not in line) + "\n")


def cleanup(settings: Settings, pg: Postgres, definition: ConnectorDefinition, name: str, root: Path) -> None:
    """Connector, slot, publication, table and the repo copy: everything ``setup`` made."""
    try:
        remove(settings, definition)
        with psycopg.connect(pg.admin_conninfo(settings.pg_database), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def handled(processor: Any) -> int:
    """Rows the processor has finished with: written to the stores or dead-lettered."""
    return int(processor.processed + processor.dead_lettered)


def wait_processed(processor: Any, target: int, timeout_s: float = 1800) -> float:
    """Seconds until the processor has handled ``target`` rows in all; exits the benchmark past the deadline."""
    start = time.monotonic()
    while handled(processor) < target:
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"processor reached {handled(processor)}/{target} rows in {timeout_s}s")
        time.sleep(0.05)
    return time.monotonic() - start


def use_online_store(settings: Settings, kind: str, schema: str) -> None:
    """Point the repo copy at ``kind`` (sqlite, postgres, redis or milvus), starting that local store if needed.

    Postgres: a schema of its own (``schema``); Redis: database 9; Milvus: a database named ``schema``.
    Drop them with ``drop_online_store``.
    """
    import re

    from core.settings import ensure_secrets_file, export_store_secrets
    from stack.launcher import GENERATED_SECRETS
    from stack.online_postgres import OnlinePostgres
    from stack.redis import RedisServer

    if kind == "sqlite":
        return
    ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    if kind == "postgres":
        online = OnlinePostgres(settings)
        online.start()
        online.bootstrap()
        with psycopg.connect(online.store_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        block = (
            "online_store:\n  type: stores.postgres.feast.PgVectorOnlineStore\n"
            f"  host: 127.0.0.1\n  port: {settings.online_pg_port}\n  database: {settings.online_pg_database}\n"
            f"  db_schema: {schema}\n  user: {settings.online_pg_user}\n"
            "  password: ${FEATURECTL_ONLINE_PG_PASSWORD}\n  sslmode: disable\n  vector_enabled: true\n"
        )
    elif kind == "redis":
        RedisServer(settings).start()
        block = (
            "online_store:\n  type: stores.redis.feast.RedisOnlineStore\n"
            f"  connection_string: 127.0.0.1:{settings.redis_port},db=9,password=${{FEATURECTL_REDIS_PASSWORD}}\n"
        )
        views = settings.feature_repo / "products.py"  # Redis has no vector search: no vector view
        text = views.read_text()
        views.write_text(text[: text.index("# History of product documents")])
    elif kind == "milvus":
        from stack.milvus import MilvusServer

        server = MilvusServer(settings)
        server.start()
        client = server.client()
        if schema not in client.list_databases():
            client.create_database(schema)
        client.close()
        block = (
            "online_store:\n  type: stores.milvus.feast.MilvusOnlineStore\n"
            f"  host: http://127.0.0.1\n  port: {settings.milvus_port}\n  db_name: {schema}\n  vector_enabled: true\n"
        )
    else:
        raise SystemExit(f"unknown online store {kind!r}: sqlite, postgres, redis or milvus")
    export_store_secrets(settings)
    path = settings.feature_repo / "feature_store.yaml"
    path.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", block, path.read_text()))


def drop_online_store(settings: Settings, kind: str, schema: str) -> None:
    from stack.online_postgres import OnlinePostgres

    if kind == "postgres":
        with psycopg.connect(OnlinePostgres(settings).store_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    elif kind == "redis":
        import redis

        with redis.Redis(
            port=settings.redis_port, db=9, password=settings.require_secret("redis_password")
        ) as r:
            r.flushdb()
    elif kind == "milvus":
        from stack.milvus import MilvusServer

        client = MilvusServer(settings).client(schema)
        for collection in client.list_collections():
            client.drop_collection(collection)
        client.close()
        client = MilvusServer(settings).client()
        client.drop_database(schema)
        client.close()
