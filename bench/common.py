"""Shared set-up for benchmarks: a table of their own, a feature repo copy reading it, a connector, cleanup."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from connectors.definition import ConnectorDefinition, load_definition
from connectors.deploy import remove
from core.settings import PROJECT_ROOT, Settings, load_settings
from stack.launcher import LocalStack
from stack.postgres import Postgres, ensure_publication
from stores.registry import OnlineStoreKind, kinds
from stores.repository import copy_repo

logger = logging.getLogger(__name__)


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
            "dlq_topic": dead_letters(name),
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
    """Connector, slot, publication, table, Kafka topics and the repo copy: everything ``setup`` made."""
    try:
        remove(settings, definition)
        with psycopg.connect(pg.admin_conninfo(settings.pg_database), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        delete_topics(settings, definition)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def dead_letters(name: str) -> str:
    """The dead-letter topic of the bench named ``name`` (``repo_and_connector``)."""
    return f"dlq.{name}"


def bench_topics(names: Iterable[str], definition: ConnectorDefinition) -> list[str]:
    """Of ``names``, the topics a bench's connector and processor made: its prefix's (tables, transactions,
    heartbeats), Debezium's heartbeat and notification topics named after it, its dead letters. Named from the
    connector alone, never from settings (the project's own dead-letter topic is not the bench's to delete)."""
    prefix = definition.topic_prefix
    own = {
        f"__debezium-heartbeat.{prefix}",
        f"__debezium-notifications.{prefix}",
        dead_letters(definition.name),
    }
    return sorted(t for t in names if t.startswith(f"{prefix}.") or t in own)


def delete_topics(settings: Settings, definition: ConnectorDefinition) -> None:
    """Delete the bench's topics (``bench_topics``): Debezium never deletes a topic, and a processor bench's
    100,000 rows left ~400 MB each on the developer's broker (16 GB after a few days of runs, 2026-11-29)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client())
    topics = bench_topics(admin.list_topics(timeout=30).topics, definition)
    if not topics:
        return
    for topic, done in admin.delete_topics(topics, operation_timeout=60).items():
        try:
            done.result()
        except Exception as exc:  # one topic left behind is not worth failing a finished bench over
            logger.warning(
                "bench cleanup: topic %s not deleted (%s); delete it with kafka-topics --delete", topic, exc
            )


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


def wait_visible(store: Any, timeout_s: float = 600) -> float:
    """Seconds until ``store``'s online store holds no source transaction out of sight (stores/transactions.py):
    a processor counts a row handled when it reads it, a held one is visible only once its transaction is
    released. 0 at once where the store keeps no transactions. Exits the benchmark past the deadline."""
    from stores.registry import kind_of, open_online_sink

    if not kind_of(store).atomic_source_transactions:
        return 0.0
    start = time.monotonic()
    sink = open_online_sink(store)  # a connection of its own: the processor's is in use in its thread
    try:
        while (state := sink.transaction_state()).waiting or state.held_rows:
            if time.monotonic() - start > timeout_s:
                raise SystemExit(
                    f"{state.waiting} transactions ({state.held_rows} rows) still held after {timeout_s}s"
                )
            time.sleep(0.01)
    finally:
        sink.close()
    return time.monotonic() - start


def store_kind(kind: str) -> OnlineStoreKind:
    """The store folder named ``kind`` (its declaration); SystemExit naming the stores otherwise."""
    found = {k.name: k for k in kinds()}
    if kind not in found:
        raise SystemExit(f"unknown online store {kind!r}: {', '.join(found)}")
    return found[kind]


def use_online_store(settings: Settings, kind: str, schema: str) -> None:
    """Point the repo copy at the store ``kind`` (a store folder's name), starting its local server if it has
    one and it is not running, in a namespace of its own (``schema``: a Postgres schema, a Redis database, a
    Milvus database; stores/<name>/server.py). A store without vector search gets no vector views. Drop the
    namespace with ``drop_online_store``."""
    import re

    from core.settings import ensure_secrets_file, export_store_secrets
    from stack.launcher import GENERATED_SECRETS

    store = store_kind(kind)
    if store.local is None:
        return  # the repo's own (SQLite)
    ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    server = store.server(settings)
    server.start()
    server.bootstrap()
    export_store_secrets(settings)
    block = server.online_store(schema)
    path = settings.feature_repo / "feature_store.yaml"
    path.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", block, path.read_text()))
    if store.vectors is None:
        views = settings.feature_repo / "products.py"
        text = views.read_text()
        views.write_text(text[: text.index("# History of product documents")])


def drop_online_store(settings: Settings, kind: str, schema: str) -> None:
    store = store_kind(kind)
    if store.local is not None:
        store.server(settings).drop(schema)
