import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from feast import FeatureStore

from core.settings import PROJECT_ROOT
from stores.registry import kinds
from stores.repository import copy_repo, feast_apply
from stores.sqlite.db import connect
from tests.conftest import LocalMilvus, LocalRedis, OnlinePg

PG_SCHEMA = "unit"


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


@pytest.fixture(scope="session")
def pg_feast_repo(tmp_path_factory: pytest.TempPathFactory, online_pg: OnlinePg) -> Iterator[FeatureStore]:
    """The same repository with the Postgres + pgvector online store (a real server), applied."""
    root = _copy_repo(tmp_path_factory)
    online_pg.use_in(root, PG_SCHEMA)
    feast_apply(root)
    yield FeatureStore(repo_path=str(root))


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


@pytest.fixture(scope="session")
def redis_feast_repo(
    tmp_path_factory: pytest.TempPathFactory, local_redis: LocalRedis
) -> Iterator[FeatureStore]:
    """The same repository with Feast's Redis online store (a real redis-server), applied."""
    root = _copy_repo(tmp_path_factory)
    local_redis.use_in(root, db=1)
    feast_apply(root)
    yield FeatureStore(repo_path=str(root))


@pytest.fixture(scope="session")
def milvus_feast_repo(
    tmp_path_factory: pytest.TempPathFactory, local_milvus: LocalMilvus
) -> Iterator[FeatureStore]:
    """The same repository with the Milvus online store (a real milvus-lite server), applied."""
    root = _copy_repo(tmp_path_factory)
    local_milvus.use_in(root, "unit")
    feast_apply(root)
    yield FeatureStore(repo_path=str(root))


@pytest.fixture
def milvus_store(milvus_feast_repo: FeatureStore, local_milvus: LocalMilvus) -> Iterator[FeatureStore]:
    local_milvus.empty("unit")
    yield milvus_feast_repo
    shutil.rmtree(Path(str(milvus_feast_repo.repo_path)) / "data" / "offline", ignore_errors=True)
    local_milvus.empty("unit")


@pytest.fixture
def postgres_store(pg_feast_repo: FeatureStore, online_pg: OnlinePg) -> Iterator[FeatureStore]:
    online_pg.empty(PG_SCHEMA)
    yield pg_feast_repo
    shutil.rmtree(Path(str(pg_feast_repo.repo_path)) / "data" / "offline", ignore_errors=True)
    online_pg.empty(PG_SCHEMA)


@pytest.fixture
def redis_store(redis_feast_repo: FeatureStore, local_redis: LocalRedis) -> Iterator[FeatureStore]:
    local_redis.flush(db=1)
    yield redis_feast_repo
    shutil.rmtree(Path(str(redis_feast_repo.repo_path)) / "data" / "offline", ignore_errors=True)
    local_redis.flush(db=1)


@pytest.fixture(params=[kind.name for kind in kinds()])
def fresh_store(request: pytest.FixtureRequest) -> FeatureStore:
    """Each online store folder under stores/, applied and empty (the contract suite every store runs:
    a new store adds its folder and a ``<name>_store`` fixture here)."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


@pytest.fixture(autouse=True, scope="session")
def pii_hash_key() -> Iterator[bytes]:
    """The key ``pii.<column> = hash`` uses in unit tests (no settings file needed)."""
    from streams import pii

    key = b"unit-test-pii-key"
    pii.set_hash_key(key)
    yield key
    pii.set_hash_key(None)
