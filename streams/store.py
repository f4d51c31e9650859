"""Opening the project's Feast repository, and ``feast apply`` as a subprocess (what users run)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from feast import FeatureStore

from featurectl.errors import ConfigError, FeatureCtlError
from featurectl.settings import Settings

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> FeatureStore:
    repo = settings.feature_repo
    if not (repo / "feature_store.yaml").exists():
        raise ConfigError(
            f"no feature_store.yaml in {repo}", "set FEATURECTL_FEATURE_REPO to your Feast repository"
        )
    return FeatureStore(repo_path=str(repo))


def feast_apply(repo: Path) -> None:
    """Run ``feast apply`` in ``repo`` (the registry and online tables are created or updated)."""
    feast = Path(sys.executable).with_name("feast")
    logger.info("feast apply in %s", repo)
    env = {**os.environ, "FEAST_USAGE": "False"}
    result = subprocess.run([str(feast), "apply"], cwd=repo, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise FeatureCtlError(
            f"feast apply failed in {repo}:\n{(result.stdout + result.stderr)[-3000:]}",
            "fix the feature declarations it names",
        )
