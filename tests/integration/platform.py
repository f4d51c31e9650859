"""A whole platform for one test: its own Feast repo and suites, connector, topics, DLQ and group.

The Feast repository and suites are copies of the project's, so tests exercise the shipped
declarations, and a test may add a feature view or fix a suite without touching the project.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from feast import FeatureStore

from connectors.definition import ConnectorDefinition, load_definition
from core.settings import PROJECT_ROOT, Settings
from jobs.replay import list_dead_letters
from stack.postgres import ensure_publication
from stores.repository import copy_repo
from streams.offsets import watermarks
from tests.integration.helpers import cli_background

SHOP_TABLES = ("public.customers", "public.products", "public.orders")


@dataclass
class Platform:
    name: str
    root: Path
    settings: Settings
    definition: ConnectorDefinition
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    online_store: str = "sqlite"  # which online store the repo writes (tests/integration/conftest.py)

    @property
    def repo(self) -> Path:
        return self.root / "feature_repo"

    @property
    def suites(self) -> Path:
        return self.root / "suites"

    def store(self) -> FeatureStore:
        return FeatureStore(repo_path=str(self.repo))

    def topic(self, table: str) -> str:
        return self.definition.topic_for(table)

    def start_processor(self, label: str = "p", *args: str) -> subprocess.Popen[bytes]:
        log = self.root / f"processor-{label}.log"
        proc = cli_background("process", "--file", str(self.definition.path), *args, env=self.env, log=log)
        self.processes.append(proc)
        return proc

    def log(self, label: str = "p") -> str:
        path = self.root / f"processor-{label}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def online(self, view: str, key: str, ids: list[int], features: list[str]) -> dict[str, list[Any]]:
        return (
            self.store()
            .get_online_features(
                features=[f"{view}:{f}" for f in features], entity_rows=[{key: i} for i in ids]
            )
            .to_dict()
        )

    def caught_up(self, topics: list[str], at_least: int = 1) -> bool:
        """True once ``topics`` hold ``at_least`` messages and the processor's group has committed them all.

        Offsets are committed only after the sinks have written, so then the stores hold everything.
        """
        consumer = Consumer(
            {"bootstrap.servers": self.settings.bootstrap_servers, "group.id": self.settings.processor_group}
        )
        try:
            parts = [
                TopicPartition(topic, p)
                for topic in topics
                for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ]
            committed = consumer.committed(parts, timeout=10)
            ends = [watermarks(consumer, p)[1] for p in parts]
        finally:
            consumer.close()
        if sum(ends) < at_least:  # not all produced yet (a topic that does not exist yet counts as empty)
            return False
        return all(c.offset >= end for c, end in zip(committed, ends, strict=True) if end > 0)

    def dead_letters(self) -> list[Any]:
        return [d for _, d in list_dead_letters(self.settings)]

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def make_platform(
    stack_settings: Settings,
    admin: str,
    root: Path,
    name: str,
    signals: bool = False,
    tables: tuple[str, ...] = SHOP_TABLES,
) -> Platform:
    """Copy the feature repo and suites, create a publication and a connector definition over ``tables``."""
    copy_repo(PROJECT_ROOT / "feature_repo", root / "feature_repo")
    shutil.copytree(PROJECT_ROOT / "validation" / "suites", root / "suites")
    definition = load_definition().derive(name, list(tables), root / f"{name}.json", signals)
    with psycopg.connect(admin, autocommit=True) as conn:
        ensure_publication(conn, definition)
    env = {
        "FEATURECTL_FEATURE_REPO": str(root / "feature_repo"),
        "FEATURECTL_SUITES_DIR": str(root / "suites"),
        "FEATURECTL_PROCESSOR_GROUP": f"{name}-processor",
        "FEATURECTL_DLQ_TOPIC": f"dlq.{name}",
        "FEATURECTL_BATCH_LINGER_MS": "20",
    }
    settings = stack_settings.model_copy(
        update={
            "feature_repo": root / "feature_repo",
            "suites_dir": root / "suites",
            "processor_group": env["FEATURECTL_PROCESSOR_GROUP"],
            "dlq_topic": env["FEATURECTL_DLQ_TOPIC"],
        }
    )
    return Platform(name, root, settings, definition, env)
