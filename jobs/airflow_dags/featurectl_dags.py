"""featurectl's batch jobs as Airflow DAGs: copy this file into your Airflow's dags folder (or point
``dags_folder`` at this directory). Airflow 3.x, with its ``standard`` provider (installed with it).

It imports nothing of featurectl: Airflow runs in its own environment, and each task runs the
``featurectl`` command of a featurectl checkout, as a user would, so the jobs keep their own rules:

- Locks: each job takes its lock (jobs/lock.py), so a task never overlaps a cron- or ``--schedule``-started
  run of the same job; a task that finds the lock held exits 75 and is retried later.
- Exit codes are task states: 0 succeeds; 75 (a transient failure: a service still starting, a held lock)
  fails the try and Airflow retries it (``retries``, ``retry_delay``); anything else (a terminal error, or a
  finding: ``verify`` found a mismatch, ``drift`` found a drifting feature) fails the task without retries,
  since running it again finds the same.
- Each DAG runs one at a time (``max_active_runs=1``) and never catches up on missed intervals.

The DAGs (set their schedules with cron expressions or presets; ``none`` = only when triggered):

- ``featurectl_maintenance`` (FEATURECTL_AIRFLOW_MAINTENANCE_SCHEDULE, default ``@daily``):
  ``backfill`` of each view in FEATURECTL_AIRFLOW_BACKFILL_VIEWS (none by default), then ``materialize
  --incremental`` (history -> online store), then ``compact`` (the history's files), then ``verify``
  (online store vs Postgres; ``--repair`` when FEATURECTL_AIRFLOW_VERIFY_REPAIR=1), each over the views in
  FEATURECTL_AIRFLOW_VIEWS (``view,view``; default: every view).
- ``featurectl_drift`` (FEATURECTL_AIRFLOW_DRIFT_SCHEDULE, default ``@hourly``): ``drift``, every view with
  a declared reference.
- ``featurectl_snapshot`` (FEATURECTL_AIRFLOW_SNAPSHOT_SCHEDULE, default ``@weekly``), only when
  FEATURECTL_AIRFLOW_SNAPSHOT_TABLES names tables (``schema.table,...``): ``snapshot --wait`` re-streams them
  through Debezium.

Where featurectl is: FEATURECTL_HOME (the checkout; default: the checkout this file is in, if it is in one)
and FEATURECTL_BIN (default ``$FEATURECTL_HOME/.venv/bin/featurectl``). Every other FEATURECTL_* variable of
the Airflow worker reaches the commands (docs/settings.md); these FEATURECTL_HOME, FEATURECTL_BIN and
FEATURECTL_AIRFLOW_* variables are this file's own and do not. Retries: FEATURECTL_AIRFLOW_RETRIES (default 3),
FEATURECTL_AIRFLOW_RETRY_DELAY_S (default 300).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

EXIT_TRANSIENT = 75  # core/errors.py EXIT_TRANSIENT: this file cannot import featurectl


def _checkout() -> Path | None:
    here = Path(__file__).resolve().parents[2]
    return here if (here / "featurectl" / "cli.py").exists() else None


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"FEATURECTL_AIRFLOW_{name}", default).strip()


def _list(name: str) -> list[str]:
    return [item.strip() for item in _setting(name, "").split(",") if item.strip()]


def _schedule(name: str, default: str) -> str | None:
    value = _setting(f"{name}_SCHEDULE", default)
    return None if value.lower() in ("", "none") else value


HOME = os.environ.get("FEATURECTL_HOME") or str(_checkout() or "")
BIN = os.environ.get("FEATURECTL_BIN") or (f"{HOME}/.venv/bin/featurectl" if HOME else "featurectl")


def command_env() -> dict[str, str]:
    """The worker's environment less this file's own variables: featurectl refuses FEATURECTL_* variables
    that are not its settings (a misspelt setting must not pass unnoticed)."""
    own = ("FEATURECTL_HOME", "FEATURECTL_BIN")
    return {k: v for k, v in os.environ.items() if k not in own and not k.startswith("FEATURECTL_AIRFLOW_")}


class FeaturectlOperator(BaseOperator):  # type: ignore[misc]  # Airflow is not in featurectl's environment
    """Runs ``featurectl <args>`` in FEATURECTL_HOME; its exit code decides the task's state (module doc)."""

    template_fields: Sequence[str] = ("args",)
    ui_color = "#e8f4fa"

    def __init__(self, *, args: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.args = args

    def execute(self, context: Any) -> str:
        if not HOME or not Path(HOME).is_dir():
            raise AirflowFailException(
                f"FEATURECTL_HOME is {HOME!r}, not a featurectl checkout: set it in the Airflow workers' "
                "environment to the directory where `./dev.sh` was run"
            )
        command = [BIN, *self.args]
        result = SubprocessHook().run_command(command=command, env=command_env(), cwd=HOME)
        what = f"`{' '.join(command)}` exited {result.exit_code}: {result.output}"
        if result.exit_code == 0:
            return str(result.output)
        if result.exit_code == EXIT_TRANSIENT:
            raise AirflowException(f"{what} (transient: retried)")
        raise AirflowFailException(f"{what} (not retried: running it again finds the same)")


def _dag(dag_id: str, schedule: str | None, doc: str) -> DAG:
    return DAG(
        dag_id,
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        doc_md=doc,
        tags=["featurectl"],
        default_args={
            "retries": int(_setting("RETRIES", "3")),
            "retry_delay": timedelta(seconds=float(_setting("RETRY_DELAY_S", "300"))),
        },
    )


with _dag(
    "featurectl_maintenance",
    _schedule("MAINTENANCE", "@daily"),
    "Backfill the configured views, materialize the history into the online store, compact it, verify "
    "the online store against Postgres.",
):
    backfills = [
        FeaturectlOperator(task_id=f"backfill_{view}", args=["backfill", view])
        for view in _list("BACKFILL_VIEWS")
    ]
    views = _list("VIEWS")
    materialize = FeaturectlOperator(task_id="materialize", args=["materialize", *views, "--incremental"])
    compact = FeaturectlOperator(task_id="compact", args=["compact", *views])
    repair = ["--repair"] if _setting("VERIFY_REPAIR", "0") == "1" else []
    verify = FeaturectlOperator(task_id="verify", args=["verify", *views, *repair])
    for backfill in backfills:
        backfill >> materialize
    materialize >> compact >> verify

with _dag(
    "featurectl_drift", _schedule("DRIFT", "@hourly"), "Score every view's features against its reference."
):
    FeaturectlOperator(task_id="drift", args=["drift"])

if _list("SNAPSHOT_TABLES"):
    with _dag(
        "featurectl_snapshot",
        _schedule("SNAPSHOT", "@weekly"),
        "Re-stream the configured tables through Debezium (incremental snapshot), waiting for it to finish.",
    ):
        FeaturectlOperator(task_id="snapshot", args=["snapshot", *_list("SNAPSHOT_TABLES"), "--wait", "3600"])
