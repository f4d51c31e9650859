"""Every benchmark runs in CI, in a small mode, against the test stack: a change that breaks a bench
fails here instead of rotting until someone next measures (issue 24: the processor bench had crashed on
main unnoticed).

One command covers them all: ``python -m bench.chain --small`` runs each bench (the processor and
serving benches on each online store) and builds the chain table from their output, failing if a bench
fails or a figure it should print is not there. Nothing here asserts a speed: figures depend on the
machine and belong in the benches' own output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from confluent_kafka.admin import AdminClient

from bench.common import bench_topics
from bench.record import chain_table, readme_block
from connectors.definition import ConnectorDefinition
from core.settings import PROJECT_ROOT, load_settings
from stack.launcher import LocalStack
from tests.integration.conftest import StackHandle

# The benches start their own online Postgres, Redis and Milvus when asked (bench/common.py use_online_store):
# ports of their own, so they never meet the test stores or a developer's default stack.
BENCH_ENV = {
    "FEATURECTL_ONLINE_PG_PORT": "26434",
    "FEATURECTL_REDIS_PORT": "26381",
    "FEATURECTL_MILVUS_PORT": "29532",
}
BENCH_STORES = ("online-postgres", "redis", "milvus")
TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def bench_env(stack: StackHandle) -> Iterator[dict[str, str]]:
    env = {**os.environ, **BENCH_ENV}
    overrides = {k.removeprefix("FEATURECTL_").lower(): v for k, v in BENCH_ENV.items()}
    bench_stores = LocalStack(load_settings(**overrides))
    # Before too: a run killed mid-bench leaves its Redis on the bench's port, which the next run would
    # find taken. After: stopped and wiped, so runs leave nothing behind.
    bench_stores.down(services=BENCH_STORES, wipe=True)
    yield env
    bench_stores.down(services=BENCH_STORES, wipe=True)


def topics(stack: StackHandle) -> set[str]:
    return set(AdminClient(stack.settings.kafka_client()).list_topics(timeout=30).topics)


def running_connectors(stack: StackHandle) -> list[ConnectorDefinition]:
    """The connectors deployed on the test stack's Connect, as its REST API gives their configs."""
    url = f"{stack.settings.connect_rest_url}/connectors"
    found = requests.get(url, params={"expand": "info"}, timeout=30)
    found.raise_for_status()
    return [
        ConnectorDefinition(name=name, config=entry["info"]["config"], path=Path(name))
        for name, entry in found.json().items()
    ]


def test_every_bench_runs_and_the_chain_table_is_built(
    stack: StackHandle, bench_env: dict[str, str], tmp_path: Path
) -> None:
    kept = tmp_path / "chain.txt"
    before = topics(stack)
    # Connectors deployed before the benches (an earlier test's, such as the project's own) go on making topics
    # while they run: a heartbeat 10 s after deployment, and the signal table's topic when the repair bench
    # inserts its snapshot signal, a row every connector capturing that table streams. Theirs, not leftovers.
    others = running_connectors(stack)
    done = subprocess.run(
        [sys.executable, "-m", "bench.chain", "--small", "--record", str(kept)],
        cwd=PROJECT_ROOT,
        env=bench_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    out = done.stdout
    assert done.returncode == 0, (
        f"bench.chain --small: exit {done.returncode}\n{out[-4000:]}\n{done.stderr[-4000:]}"
    )
    chain = out[out.index("===== the chain") :]
    print(chain)
    for line in (
        "processor catch-up",
        "processor processes",
        "vectors' hardness",
        "HTTP 1 entity offered at 2,500/s",
        "same, Feast's own server (feast serve, the anchor)",
        "top-10 of 300, ef_search 100",
        "vectors/s are written, ef_search 100",
        "commit in Postgres -> searchable",
        "  milvus: ",
        "aggregation view (SQLite",
    ):
        assert line in chain, f"the chain table lacks {line!r}:\n{chain}"
    # The record holds what was printed under the commit, date and machine; README's block is built from it.
    text = kept.read_text()
    for field in ("commit: ", "date: ", "machine: ", "command: "):
        assert f"\n{field}" in text, f"the record lacks its {field!r} line:\n{text[:500]}"
    assert chain_table(kept) in out
    assert "| processor catch-up" in readme_block(kept)
    # A bench leaves nothing in Kafka: Debezium never deletes a topic, and the benches' topics had filled a
    # developer's broker with 16 GB (bench/common.py delete_topics).
    made = topics(stack) - before
    left = sorted(made - {t for c in others for t in bench_topics(made, c)})
    assert not left, f"the benches left {len(left)} topic(s) in Kafka: {left}"
