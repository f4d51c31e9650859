"""Opening the project's Feast repository, and ``feast apply`` as a subprocess (what users run)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from feast import FeatureStore, FeatureView

from core.errors import ConfigError, FeatureCtlError
from core.settings import Settings

logger = logging.getLogger(__name__)

# What Feast and featurectl generate inside a feature repository: never part of a copy of its declarations.
GENERATED = ("data", "__pycache__", "feast_monitoring")


def copy_repo(source: Path, target: Path) -> Path:
    """Copy the feature repository ``source`` (declarations and feature_store.yaml, not its stores,
    caches or monitoring metrics) to ``target``; returns ``target``."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*GENERATED))
    return target


def open_store(settings: Settings) -> FeatureStore:
    repo = settings.feature_repo
    if not (repo / "feature_store.yaml").exists():
        raise ConfigError(
            f"no feature_store.yaml in {repo}", "set FEATURECTL_FEATURE_REPO to your Feast repository"
        )
    return FeatureStore(repo_path=str(repo))


def declared_views(repo: Path) -> list[FeatureView]:
    """The feature views ``repo``'s Python files declare now (not yet applied), as `feast apply` reads them."""
    from feast.inference import update_feature_views_with_inferred_features_and_entities
    from feast.infra.provider import get_provider
    from feast.repo_operations import parse_repo

    repo = repo.resolve()
    before, cwd = set(sys.modules), os.getcwd()
    sys.path.insert(0, str(repo))
    os.chdir(repo)  # parse_repo names modules by their path relative to the working directory
    try:
        contents = parse_repo(repo)
        views = list(contents.feature_views)
        # What `feast apply` does first: entity columns (join keys) from the declared entities.
        config = FeatureStore(repo_path=str(repo)).config
        update_feature_views_with_inferred_features_and_entities(
            get_provider(config), views, list(contents.entities), config
        )
        return views
    except Exception as exc:
        raise ConfigError(
            f"the feature repository {repo} does not load: {type(exc).__name__}: {exc}",
            "fix the declaration it names",
        ) from None
    finally:
        os.chdir(cwd)
        sys.path.remove(str(repo))
        for name in set(sys.modules) - before:  # the repo's own modules: a later parse re-reads them
            if getattr(sys.modules[name], "__file__", "") and str(sys.modules[name].__file__).startswith(
                str(repo)
            ):
                del sys.modules[name]


def feast_apply(repo: Path) -> None:
    """Run ``feast apply`` in ``repo`` (the registry and online tables are created or updated)."""
    feast = Path(sys.executable).with_name("feast")
    logger.info("feast apply in %s", repo)
    env = {**os.environ, "FEAST_USAGE": "False"}
    result = subprocess.run([str(feast), "apply"], cwd=repo, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        unreachable = any(
            word in output
            for word in (
                "Connection refused",
                "connection refused",
                "OperationalError",
                "ConnectionError",
                "could not connect",
                "Name or service not known",
                "timed out",
            )
        )
        raise FeatureCtlError(
            f"feast apply failed in {repo}:\n{output}",
            "start the online store, or fix its address and password in feature_store.yaml's online_store "
            "(`featurectl stack status` shows the local ones)"
            if unreachable
            else "fix the feature declarations it names",
        )
    from stores.history.tables import create_history_tables

    create_history_tables(FeatureStore(repo_path=str(repo)))
