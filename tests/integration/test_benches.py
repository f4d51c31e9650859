"""Every benchmark runs in CI, in a small mode, against the test stack: a change that breaks a bench
fails here instead of rotting until someone next measures (issue 24: the processor bench had crashed on
main unnoticed).

Nothing here asserts a speed: figures depend on the machine and belong in the benches' own output. Each
bench must run to its end, exit 0 and print the command line that produced its figures, then the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.settings import PROJECT_ROOT, load_settings
from stack.launcher import LocalStack
from tests.integration.conftest import StackHandle

# The benches start their own online Postgres and Redis when asked (bench/common.py use_online_store):
# ports of their own, so they never meet the test stores or a developer's default stack.
BENCH_ENV = {"FEATURECTL_ONLINE_PG_PORT": "26434", "FEATURECTL_REDIS_PORT": "26381"}

# bench -> small-mode arguments (seconds each, every code path the full run takes).
SMALL: dict[str, list[str]] = {
    "processor_bench": ["--rows", "300", "--rate", "50", "--seconds", "2"],
    "processor_bench --online-store redis": ["--rows", "300", "--rate", "50", "--seconds", "2"],
    "online_store_bench": ["--rows", "200", "--vectors", "100", "--queries", "10"],
    "serving_bench": ["--rows", "100", "--requests", "20"],
    "pit_bench": ["--history", "2000", "--entities", "200", "--labels", "200"],
    "embedding_bench": ["--texts", "20", "--sizes", "100", "--queries", "5"],
    "vector_scale_bench": ["--vectors", "300", "--queries", "5", "--ef-search", "40,100"],
}
TIMEOUT_S = 900


def _command(case: str) -> list[str]:
    script, *extra = case.split()
    return [sys.executable, "-m", f"bench.{script}", *extra, *SMALL[case]]


@pytest.fixture(scope="module")
def bench_env(stack: StackHandle) -> Iterator[dict[str, str]]:
    env = {**os.environ, **BENCH_ENV}
    yield env
    # What the benches started (online Postgres, Redis): stopped and wiped, so runs leave nothing behind.
    LocalStack(
        load_settings(**{k.removeprefix("FEATURECTL_").lower(): v for k, v in BENCH_ENV.items()})
    ).down(services=("online-postgres", "redis"), wipe=True)


def test_every_bench_runs_in_small_mode(bench_env: dict[str, str]) -> None:
    """Two at a time (two cores; each bench spends much of its time waiting on the stack)."""

    def run(case: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        return case, subprocess.run(
            _command(case),
            cwd=PROJECT_ROOT,
            env=bench_env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, SMALL))
    failed = []
    for case, done in results:
        out = done.stdout
        if done.returncode != 0 or "command:" not in out or len(out[out.find("command:") :].splitlines()) < 3:
            failed.append(f"{case}: exit {done.returncode}\n{out[-2000:]}\n{done.stderr[-3000:]}")
        else:
            print(f"\n--- {case}\n{out[out.index('command:') :]}")
    assert not failed, "benches that no longer run:\n\n" + "\n\n".join(failed)
