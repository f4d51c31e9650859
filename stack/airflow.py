"""Apache Airflow in a virtualenv of its own, to run the DAGs of jobs/airflow_dags/ locally and in the tests.

Airflow pins hundreds of packages (SQLAlchemy, pydantic, protobuf among them) that would fight Feast's and
Great Expectations' pins in one environment, and a data engineer's Airflow is never featurectl's
environment either: the DAGs run the ``featurectl`` command, so they work from any Airflow.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from core.errors import FeatureCtlError
from core.settings import Settings

logger = logging.getLogger(__name__)

AIRFLOW_VERSION = "3.3.2"
"""The Airflow release the DAGs are tested with (its ``standard`` provider comes with it)."""

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "jobs" / "airflow_dags"
"""The folder to give Airflow as ``dags_folder`` (or copy its file from)."""


def airflow_home(settings: Settings) -> Path:
    """Where the virtualenv lives: in the cache, outside the repository, shared by clones."""
    return settings.cache_dir / "airflow" / f"airflow-{AIRFLOW_VERSION}"


def ensure_airflow(settings: Settings) -> Path:
    """The ``airflow`` executable of a virtualenv with Airflow installed (created once; idempotent)."""
    home = airflow_home(settings)
    executable = home / "bin" / "airflow"
    if (home / ".complete").exists() and executable.exists():
        return executable
    # Built where it lives (a virtualenv's scripts name its path); `.complete` marks a finished install, so
    # an interrupted one is started over.
    shutil.rmtree(home, ignore_errors=True)
    logger.info(
        "installing Apache Airflow %s into its own virtualenv %s (about a minute)", AIRFLOW_VERSION, home
    )
    steps = [
        [sys.executable, "-m", "venv", str(home)],
        [str(home / "bin" / "pip"), "install", "-q", f"apache-airflow=={AIRFLOW_VERSION}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise FeatureCtlError(
                f"installing Airflow failed: `{' '.join(step)}` exited {done.returncode}:\n"
                + (done.stdout + done.stderr)[-2000:],
                "check that PyPI is reachable; the virtualenv is rebuilt on the next try",
            )
    (home / ".complete").write_text(f"{AIRFLOW_VERSION}\n")
    return executable
