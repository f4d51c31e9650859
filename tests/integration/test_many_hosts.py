"""Processors on many hosts: three processes in separate directories share nothing local.

What they share is what separate hosts would: Kafka (one consumer group), the Postgres online store,
the Feast registry in that Postgres (Feast's SQL registry), and the declared shared offline location
(the views' FileSource paths, absolute: a mount every host sees). Each "host" has only its own
feature_store.yaml and suites. One of them is killed with SIGKILL mid-workload.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections import Counter, defaultdict
from typing import Any

import pandas as pd
import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg import sql

from stores.postgres.server import OnlinePostgres
from stores.repository import feast_apply
from tests.conftest import LocalStore
from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, cli_background, history_rows, wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor_recovery import (
    Workload,
    _members,
    assert_offline_has_every_change,
    assert_online_equals_postgres,
)


def share_registry_and_history(platform: Platform, local_postgres: LocalStore) -> None:
    """Move the platform's registry into Postgres and declare its history location absolute."""
    schema = f"{platform.name}_registry"
    server = local_postgres.server
    assert isinstance(server, OnlinePostgres)
    with psycopg.connect(server.store_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    s = server.own
    url = (
        f"postgresql+psycopg://{s.online_pg_user}:${{FEATURECTL_ONLINE_PG_PASSWORD}}@127.0.0.1:"
        f"{s.online_pg_port}/{s.online_pg_database}?options=-csearch_path%3D{schema}"
    )
    yaml_path = platform.repo / "feature_store.yaml"
    text = re.sub(
        r"registry:\n(?:[ #].*\n)+",
        f"registry:\n  registry_type: sql\n  path: {url}\n  cache_ttl_seconds: 5\n",
        yaml_path.read_text(),
    )
    yaml_path.write_text(text)
    shared = platform.repo / "data" / "offline"  # where history_rows reads; absolute in the declarations
    for source in platform.repo.glob("*.py"):
        source.write_text(source.read_text().replace('path="data/offline/', f'path="{shared}/'))
    feast_apply(platform.repo)


def host(platform: Platform, label: str) -> dict[str, str]:
    """A host's own directory: feature_store.yaml and suites only. Returns its processor environment."""
    root = platform.root / f"host-{label}"
    (root / "feature_repo").mkdir(parents=True)
    shutil.copy(platform.repo / "feature_store.yaml", root / "feature_repo" / "feature_store.yaml")
    shutil.copytree(platform.suites, root / "suites")
    return {
        **platform.env,
        "FEATURECTL_FEATURE_REPO": str(root / "feature_repo"),
        "FEATURECTL_SUITES_DIR": str(root / "suites"),
    }


@pytest.mark.parametrize("platform", ["postgres"], indirect=True)
def test_three_processors_on_separate_hosts_with_a_kill_9_lose_nothing_and_write_history_once(
    stack: StackHandle, platform: Platform, local_postgres: LocalStore
) -> None:
    share_registry_and_history(platform, local_postgres)
    procs = {}
    for label in "abc":
        env = host(platform, label)
        procs[label] = cli_background(
            "process",
            "--file",
            str(platform.definition.path),
            env=env,
            log=platform.root / f"processor-{label}.log",
        )
        platform.processes.append(procs[label])
    with psycopg.connect(stack.app, autocommit=True) as conn:  # the topic exists before the group forms
        conn.execute(
            "INSERT INTO customers (email, full_name, country, credit_limit) VALUES (%s, 'S', 'GB', 1)",
            (f"seed-{os.urandom(4).hex()}@t",),
        )
    admin = AdminClient({"bootstrap.servers": stack.settings.bootstrap_servers})
    group = platform.env["FEATURECTL_PROCESSOR_GROUP"]

    def three_owners() -> list[set[tuple[str, int]]] | None:
        members = _members(admin, group)
        return members if len(members) == 3 and all(members) else None

    wait_until(three_owners, 120, "all three processors to own partitions")
    work = Workload(stack.app, rows=300, updates=2700)
    work.start()
    assert work.halfway.wait(120) and work.error is None
    assert three_owners() is not None  # the killed one owns partitions at that moment
    os.kill(procs["a"].pid, signal.SIGKILL)  # mid-batch: its partitions move to b and c
    assert procs["a"].wait(10) == -signal.SIGKILL
    wait_until(lambda: len(_members(admin, group)) == 2, 120, "the killed processor's partitions to move")
    work.join(300)
    assert work.error is None and not work.is_alive()

    assert_online_equals_postgres(stack, platform, work)
    assert_offline_has_every_change(platform, work)
    verified = cli(
        "verify", "customer_profile", "--file", str(platform.definition.path), env=platform.env, timeout=300
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert procs["b"].poll() is None and procs["c"].poll() is None
    logs = {label: platform.log(label) for label in "abc"}
    assert "claimed" in logs["a"]  # it did own partitions when it was killed
    assert all("Traceback" not in logs[label] for label in "bc"), logs

    # A batch the killed copy committed to the Delta history but whose offsets it never committed was
    # re-read by its successor, which found its positions marked in the table: every change is there once
    # already; compaction rewrites the files and the training set stays the same.
    ids = sorted(work.expected)
    history = history_rows(
        platform.repo, "customer_profile", ["customer_id", "cdc_version", "event_timestamp", "credit_limit"]
    )
    mine = [r for r in history if r["customer_id"] in work.expected]
    copies = Counter((r["customer_id"], r["cdc_version"]) for r in mine)
    assert max(copies.values()) == 1, [k for k, n in copies.items() if n > 1][:5]
    assert len(copies) == work.total
    labels = _label_rows(mine, ids)
    before = _training_set(platform, labels)
    compacted = cli("compact", "customer_profile", env=platform.env, timeout=300)
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    after_rows = [
        r
        for r in history_rows(platform.repo, "customer_profile", ["customer_id", "cdc_version"])
        if r["customer_id"] in work.expected
    ]
    copies = Counter((r["customer_id"], r["cdc_version"]) for r in after_rows)
    assert copies and max(copies.values()) == 1, [k for k, n in copies.items() if n > 1][:5]
    assert len(copies) == work.total  # every change once: inserts, updates and deletes
    after = _training_set(platform, labels)
    pd.testing.assert_frame_equal(before, after)
    # The point-in-time join picks, at each change's commit time, the value that change set.
    assert after["credit_limit"].tolist() == labels["expected"].tolist()


def _label_rows(history: list[dict[str, Any]], ids: list[int]) -> pd.DataFrame:
    """One label row at each non-delete change's commit time of a sample of entities, with its value."""
    by_id: dict[int, dict[int, tuple[Any, float]]] = defaultdict(dict)
    for r in history:
        if r["credit_limit"] is not None:
            by_id[r["customer_id"]][r["cdc_version"]] = (r["event_timestamp"], r["credit_limit"])
    rows = [(cid, ts, value) for cid in ids[:: max(1, len(ids) // 40)] for ts, value in by_id[cid].values()]
    df = pd.DataFrame(rows, columns=["customer_id", "event_timestamp", "expected"]).astype(
        {"customer_id": "int64"}
    )
    return df.sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)


def _training_set(platform: Platform, labels: pd.DataFrame) -> pd.DataFrame:
    df = (
        platform.store()
        .get_historical_features(entity_df=labels, features=["customer_profile:credit_limit"])
        .to_df()
    )
    return df.sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)[
        ["customer_id", "event_timestamp", "expected", "credit_limit"]
    ]
