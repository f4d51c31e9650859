"""Airflow runs featurectl's jobs (jobs/airflow_dags/featurectl_dags.py): real Airflow 3 in a virtualenv of
its own (`featurectl stack install --airflow`), its DAGs run with `airflow dags test` against the test stack.

The DAGs parse; a maintenance run (backfill, materialize, compact, verify) succeeds task by task and leaves
the online store equal to Postgres; a job whose lock another run holds is retried, then fails its task and the tasks after it do not run;
a verify that finds a mismatch fails its task at once (a finding is not retried) and the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from core.settings import PROJECT_ROOT, load_settings
from jobs.lock import job_lock
from stack.airflow import DAGS_FOLDER, ensure_airflow
from tests.integration.conftest import StackHandle
from tests.integration.platform import Platform
from tests.integration.test_processor import insert_customer

Airflow = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    """Runs the `airflow` CLI with a fresh AIRFLOW_HOME (SQLite metadata database) over our DAGs folder."""
    executable = ensure_airflow(load_settings())  # installed by `./dev.sh test` already: a no-op then
    home = tmp_path_factory.mktemp("airflow")
    base = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "FEATURECTL_HOME": str(PROJECT_ROOT),
        "FEATURECTL_BIN": str(Path(sys.executable).parent / "featurectl"),
        # Quick retries, so the retried case ends in seconds.
        "FEATURECTL_AIRFLOW_RETRIES": "2",
        "FEATURECTL_AIRFLOW_RETRY_DELAY_S": "1",
    }

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(executable), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **base, **(env or {})},
            cwd=home,
        )

    migrated = run("db", "migrate")
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    yield run


def dag_run(airflow: Airflow, dag_id: str, env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """One `airflow dags test` run: (exit code, task id -> final state, the run's log)."""
    done = airflow("dags", "test", dag_id, env=env)
    log = done.stdout + done.stderr
    run_id = re.findall(r"DagRun Finished: dag_id=\S+ logical_date=.*?run_id=([^,\s]+)", log)
    assert run_id, f"no run of {dag_id} finished:\n{log[-5000:]}"
    states = airflow("tasks", "states-for-dag-run", dag_id, run_id[-1], "-o", "json", env=env)
    assert states.returncode == 0, states.stderr[-3000:]
    table = json.loads(states.stdout[states.stdout.index("[") :])
    return done.returncode, {t["task_id"]: t["state"] for t in table}, log


def said(log: str) -> str:
    """What the featurectl commands printed about their failures, from an Airflow run's log."""
    lines = [line for line in log.splitlines() if re.search(r"exited \d+|error|fix:", line)]
    return "\n".join(lines[-40:]) or log[-5000:]


def test_the_dags_parse_without_import_errors(airflow: Airflow) -> None:
    env = {"FEATURECTL_AIRFLOW_SNAPSHOT_TABLES": "public.customers"}
    errors = airflow("dags", "list-import-errors", "--local", "-o", "plain", env=env)
    assert errors.returncode == 0 and "featurectl_dags.py" not in errors.stdout, errors.stdout + errors.stderr
    listed = airflow("dags", "list", "--local", "-o", "plain", env=env)
    for dag_id in ("featurectl_maintenance", "featurectl_drift", "featurectl_snapshot"):
        assert dag_id in listed.stdout, listed.stdout + listed.stderr[-3000:]


def test_a_maintenance_run_succeeds_task_by_task_and_failing_jobs_fail_their_tasks(
    stack: StackHandle, platform: Platform, airflow: Airflow
) -> None:
    with psycopg.connect(stack.app, autocommit=True) as conn:
        ids = [insert_customer(conn, "gold", 40.0 + i) for i in range(5)]
    env = {
        **platform.env,
        "FEATURECTL_AIRFLOW_VIEWS": "customer_profile",
        "FEATURECTL_AIRFLOW_BACKFILL_VIEWS": "customer_profile",
    }

    # Postgres -> history (backfill) -> online store (materialize), compacted, verified: every task succeeds.
    code, states, log = dag_run(airflow, "featurectl_maintenance", env)
    assert code == 0 and states == {
        "backfill_customer_profile": "success",
        "materialize": "success",
        "compact": "success",
        "verify": "success",
    }, (states, said(log))
    online = platform.online("customer_profile", "customer_id", ids, ["segment", "credit_limit"])
    assert online["credit_limit"] == [40.0 + i for i in range(5)] and set(online["segment"]) == {"gold"}

    # materialize's lock held by another run: the task exits 75 (transient), is tried 3 times (2 retries),
    # then fails, and the tasks after it do not run.
    no_backfill = {**env, "FEATURECTL_AIRFLOW_BACKFILL_VIEWS": ""}
    with job_lock(platform.settings.data_dir / "locks", "materialize"):
        code, states, log = dag_run(airflow, "featurectl_maintenance", no_backfill)
    assert code != 0 and states == {
        "materialize": "failed",
        "compact": "upstream_failed",
        "verify": "upstream_failed",
    }, (states, said(log))
    assert log.count("materialize customer_profile --incremental` exited 75") == 3, said(log)

    # A row changed in Postgres that nothing streamed (no processor runs): verify finds it, its task fails
    # on the first try although retries are allowed, and so does the run.
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute("UPDATE customers SET credit_limit = 1 WHERE id = %s", (ids[0],))
    code, states, log = dag_run(airflow, "featurectl_maintenance", no_backfill)
    assert code != 0 and states["compact"] == "success" and states["verify"] == "failed", (states, said(log))
    assert log.count("verify customer_profile` exited 1") == 1 and "not retried" in log, said(log)
