import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from feast import FeatureStore

from featurectl.settings import PROJECT_ROOT
from streams.store import feast_apply


@pytest.fixture(scope="session")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    """A copy of the project's Feast repository, applied (SQLite online store, file offline store)."""
    root = tmp_path_factory.mktemp("repo") / "feature_repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", root, ignore=shutil.ignore_patterns("data", "__pycache__"))
    feast_apply(root)
    yield FeatureStore(repo_path=str(root))


@pytest.fixture
def fresh_store(feast_repo: FeatureStore) -> Iterator[FeatureStore]:
    """The applied repo with empty stores: online rows and offline files removed."""
    yield feast_repo
    repo = Path(str(feast_repo.repo_path))
    shutil.rmtree(repo / "data" / "offline", ignore_errors=True)
    import sqlite3

    with sqlite3.connect(repo / "data" / "online_store.db") as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            conn.execute(f'DELETE FROM "{table}"')
