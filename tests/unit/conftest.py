import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from feast import FeatureStore

from core.settings import PROJECT_ROOT
from stores.registry import OnlineStoreKind, kinds
from stores.repository import copy_repo, feast_apply
from stores.sqlite.db import connect
from tests.conftest import LocalStore

UNIT = "unit"
"""The namespace the unit tests use on each store's local server (a schema, a database)."""


def _copy_repo(tmp_path_factory: pytest.TempPathFactory, delta: bool = True) -> Path:
    root = tmp_path_factory.mktemp("repo") / "feature_repo"
    copy_repo(PROJECT_ROOT / "feature_repo", root)
    if not delta:  # histories as plain Parquet directories (FileSource's default format)
        for module in root.glob("*.py"):
            text = module.read_text()
            module.write_text("\n".join(line for line in text.splitlines() if "DeltaFormat()" not in line))
    return root


@pytest.fixture(scope="session")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    """A copy of the project's Feast repository, applied (SQLite online store, file offline store)."""
    root = _copy_repo(tmp_path_factory)
    feast_apply(root)
    yield FeatureStore(repo_path=str(root))


@pytest.fixture(scope="session")
def parquet_dir_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    """The repository with every history a directory of Parquet files instead of a Delta table."""
    root = _copy_repo(tmp_path_factory, delta=False)
    feast_apply(root)
    yield FeatureStore(repo_path=str(root))


@pytest.fixture
def parquet_dir_store(parquet_dir_repo: FeatureStore) -> Iterator[FeatureStore]:
    yield parquet_dir_repo
    _empty_sqlite(Path(str(parquet_dir_repo.repo_path)))


@pytest.fixture
def sqlite_store(feast_repo: FeatureStore) -> Iterator[FeatureStore]:
    """The applied repo with empty stores: online rows (vectors too) and offline files removed."""
    yield feast_repo
    _empty_sqlite(Path(str(feast_repo.repo_path)))


def _empty_sqlite(repo: Path) -> None:
    shutil.rmtree(repo / "data" / "offline", ignore_errors=True)
    conn = connect(repo / "data" / "online_store.db")
    with conn:
        tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
        for table, sql in tables:
            # Vector tables are emptied through vec0, never through their shadow tables.
            if "__vec_" not in table or sql.startswith("CREATE VIRTUAL TABLE"):
                conn.execute(f'DELETE FROM "{table}"')
    conn.close()


def _store_fixtures(kind: OnlineStoreKind) -> tuple[object, object]:
    """``<name>_feast_repo`` (session: the repository applied on the store's local server, in namespace
    UNIT) and ``<name>_store`` (that repository with the namespace empty before and after the test)."""

    def feast_repo_on(
        tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
    ) -> Iterator[FeatureStore]:
        local: LocalStore = request.getfixturevalue(f"local_{kind.name}")
        root = _copy_repo(tmp_path_factory)
        local.use_in(root, UNIT)
        feast_apply(root)
        yield FeatureStore(repo_path=str(root))

    def empty_store(request: pytest.FixtureRequest) -> Iterator[FeatureStore]:
        local: LocalStore = request.getfixturevalue(f"local_{kind.name}")
        repo: FeatureStore = request.getfixturevalue(f"{kind.name}_feast_repo")
        local.empty(UNIT)
        yield repo
        shutil.rmtree(Path(str(repo.repo_path)) / "data" / "offline", ignore_errors=True)
        local.empty(UNIT)

    feast_repo_on.__doc__ = (
        f"The project's repository on the {kind.label} online store (its local server), applied."
    )
    empty_store.__doc__ = f"The {kind.label} repository with its online namespace empty."
    return (
        pytest.fixture(scope="session", name=f"{kind.name}_feast_repo")(feast_repo_on),
        pytest.fixture(name=f"{kind.name}_store")(empty_store),
    )


# Per store with a local server: <name>_feast_repo and <name>_store (postgres_store, redis_store, ...); SQLite's
# are above (its file needs no server).
for _kind in kinds():
    if _kind.local is not None:
        globals()[f"{_kind.name}_feast_repo"], globals()[f"{_kind.name}_store"] = _store_fixtures(_kind)


@pytest.fixture(params=[kind.name for kind in kinds()])
def fresh_store(request: pytest.FixtureRequest) -> FeatureStore:
    """Each online store folder under stores/, applied and empty (the contract suite every store runs; a store
    with a local server gets its ``<name>_store`` above, from its declaration)."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


@pytest.fixture(autouse=True, scope="session")
def pii_hash_key() -> Iterator[bytes]:
    """The key ``pii.<column> = hash`` uses in unit tests (no settings file needed)."""
    from streams import pii

    key = b"unit-test-pii-key"
    pii.set_hash_key(key)
    yield key
    pii.set_hash_key(None)
