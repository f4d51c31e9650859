"""The real local stack, started once per test session from nothing, on ports of its own.

Tests never share a developer's running stack: they get their own data directory and ports,
and each test captures tables, topics and connectors with unique names.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors.definition import load_definition
from connectors.deploy import deploy, remove
from core.settings import PROJECT_ROOT, Settings, load_settings
from stack.launcher import LocalStack
from stack.postgres import ensure_publication
from stores.registry import kinds
from stores.repository import copy_repo, feast_apply
from tests.conftest import LocalStore, without_vector_views
from tests.integration.helpers import Capture, unique
from tests.integration.platform import Platform, make_platform

# Ports below Linux's ephemeral range (32768-60999): an outgoing connection can hold a port in that
# range, and then a broker binding it fails with "Address already in use" (seen once in a test run).
# The data directory sits under a 0700 directory, as a clone in root's home or `mktemp -d` does, so
# every run proves the stack starts where the postgres OS user cannot traverse (issue 9).
# A lane of tests/run.py with a stack of its own moves its folder and its ports (by an offset) together.
PRIVATE_PARENT = PROJECT_ROOT / os.environ.get("PYTEST_FEATURECTL_DIR", ".stack-test")
_OFFSET = int(os.environ.get("PYTEST_FEATURECTL_PORT_OFFSET", "0"))
TEST_ENV = {
    "FEATURECTL_DATA_DIR": str(PRIVATE_PARENT / "data"),
    "FEATURECTL_PG_PORT": str(26432 + _OFFSET),
    "FEATURECTL_KAFKA_PORT": str(29192 + _OFFSET),
    "FEATURECTL_KAFKA_CONTROLLER_PORT": str(29193 + _OFFSET),
    "FEATURECTL_CONNECT_PORT": str(28183 + _OFFSET),
    "FEATURECTL_KAFKA_SASL_PORT": str(29194 + _OFFSET),
}
# Set for the whole session, so CLI subprocesses reach the test stack too.
os.environ.update(TEST_ENV)

INTEGRATION_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration (pytest ignores ``pytestmark`` in a conftest), so
    ``-m "not integration"`` runs the rest without the stack."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class StackHandle:
    stack: LocalStack
    settings: Settings
    startup_s: float

    @property
    def app(self) -> str:
        return self.stack.postgres.app_conninfo()

    @property
    def admin(self) -> str:
        return self.stack.postgres.admin_conninfo(self.settings.pg_database)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackHandle]:
    settings = load_settings()
    local = LocalStack(settings)
    local.down()  # a previous run's leftovers, if any
    local.postgres.wipe()  # not down(wipe=True): that also wipes the project's own feature_repo/data
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    PRIVATE_PARENT.mkdir(exist_ok=True)
    PRIVATE_PARENT.chmod(0o700)
    startup = local.up()
    print(f"\nlocal stack up from nothing in {startup:.1f}s", file=sys.stderr)
    yield StackHandle(local, settings, startup)
    local.down()
    # The cluster lives outside the data directory when run as root: keep its log, drop its data,
    # so repeated runs from fresh clones leave no clusters behind.
    if local.postgres.log_file.exists():
        shutil.copy(local.postgres.log_file, settings.data_dir / "postgres.log")
    local.postgres.wipe()


@pytest.fixture
def capture(stack: StackHandle, tmp_path: Path) -> Iterator[Callable[..., Capture]]:
    """Factory: create uniquely named tables (``name -> column DDL``), optionally seed them, deploy a connector."""
    made: list[Capture] = []

    def make(
        tables: dict[str, str],
        seed: Callable[[psycopg.Connection[Any], dict[str, str]], None] | None = None,
        deploy_now: bool = True,
    ) -> Capture:
        name = unique("t")
        suffix = name.split("_", 1)[1]
        names = {logical: f"{logical}_{suffix}" for logical in tables}
        base = load_definition()
        with psycopg.connect(stack.app) as conn:
            for logical, columns in tables.items():
                table = names[logical]
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(columns)))
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(table)))
            if seed:
                seed(conn, names)
        definition = base.derive(name, [f"public.{t}" for t in names.values()], tmp_path / f"{name}.json")
        with psycopg.connect(stack.admin, autocommit=True) as conn:
            ensure_publication(conn, definition)
        cap = Capture(definition, names)
        made.append(cap)
        if deploy_now:
            deploy(stack.settings, cap.definition, timeout_s=120)
        return cap

    yield make
    for cap in made:
        try:
            remove(stack.settings, cap.definition)
        except Exception as exc:  # cleanup must not hide the test's own failure
            print(f"cleanup of {cap.definition.name} failed: {exc}", file=sys.stderr)


@pytest.fixture
def made(stack: StackHandle) -> Iterator[list[tuple[str, int]]]:
    """Rows a test adds to the shared shop tables, deleted afterwards: later tests search and snapshot them,
    and `verify` of a shop view compares every row (a row the shipped suite rejects, left behind, is missing
    online for every later test that verifies; the order of tests must not matter)."""
    rows: list[tuple[str, int]] = []
    yield rows
    with psycopg.connect(stack.app, autocommit=True) as conn:
        for table, rid in rows:
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table)), (rid,))


# Customers the shipped customer_profile suite rejects (validation/suites/customer_profile.json), or that no
# processor can decode (a year past 9999): the rows `verify` of customer_profile finds missing online.
REJECTED_CUSTOMERS = (
    "SELECT id FROM customers WHERE segment NOT IN ('standard', 'silver', 'gold', 'platinum') "
    "OR credit_limit < 0 OR credit_limit > 1000000 OR country !~ '^[A-Z]{2}$' OR birth_date >= '10000-01-01'"
)


@pytest.fixture(autouse=True)
def shop_rows_stay_valid(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the stack must not leave customers the shipped suite rejects: every later test that verifies
    customer_profile would find them missing online, so tests would pass or fail by their order (two workers
    hand files out in no fixed order). Such rows fail the test that left them (add them to ``made``), and go."""
    yield
    if "stack" not in request.fixturenames:
        return
    handle: StackHandle = request.getfixturevalue("stack")
    with psycopg.connect(handle.app, autocommit=True) as conn:
        left = [row[0] for row in conn.execute(REJECTED_CUSTOMERS)]
        if left:
            conn.execute("DELETE FROM customers WHERE id = ANY(%s)", (left,))
    if left:
        pytest.fail(
            f"the test left customers the customer_profile suite rejects: ids {left}; add them to `made`"
        )


# The platforms each store joins, from its declaration (stores/<name>/__init__.py): adding a store adds it here.
_VECTORS = [k.name for k in kinds() if k.indexes_vectors(k.canonical)]
_SCALAR = [k.name for k in kinds() if k.scalar_tests]
_ALL = [k.name for k in kinds()]
ONLINE_STORES = pytest.mark.parametrize("platform", _VECTORS, indirect=True)
"""Put on a test to run it once per online store that indexes vectors."""
SCALAR_STORES = pytest.mark.parametrize("platform", _SCALAR, indirect=True)
"""Put on a test of scalar features to run it once per online store that joins them (``KIND.scalar_tests``:
Milvus, which holds vectors too, runs ONLINE_STORES and ALL_STORES instead: the CI's time is bounded)."""
ALL_STORES = pytest.mark.parametrize("platform", _ALL, indirect=True)
"""Every online store: for the guarantees a store keeps without transactions (stores/milvus/sink.py)."""


@pytest.fixture
def platform(stack: StackHandle, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Platform]:
    """A connector over the shop tables, a copy of the Feast repo applied, ready for processors.

    The online store is SQLite unless the test is parametrised (ONLINE_STORES) with "postgres": then
    the repo writes the session's Postgres + pgvector store (tests/conftest.py), in a schema of its own."""
    yield from _platform(
        stack, tmp_path, signals=False, online=getattr(request, "param", "sqlite"), request=request
    )


@pytest.fixture
def signal_platform(stack: StackHandle, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Platform]:
    """A platform whose connector also captures the signal table (incremental snapshots); parametrise it
    indirectly with an online store name like ``platform``."""
    yield from _platform(
        stack, tmp_path, signals=True, online=getattr(request, "param", "sqlite"), request=request
    )


def use_online_store(plat: Platform, online: str, request: pytest.FixtureRequest | None) -> None:
    """Point ``plat``'s Feast repo at the session's ``online`` store (a store folder's name; SQLite, the
    repo's own, needs nothing), in a namespace of its own, empty; before ``feast apply``."""
    plat.online_store = online
    if online not in _ALL:
        raise ValueError(f"unknown online store {online!r}: one of {_ALL}")
    if online == "sqlite":
        return
    assert request is not None
    local: LocalStore = request.getfixturevalue(f"local_{online}")
    local.use_in(plat.repo, plat.name)
    local.empty(plat.name)
    if local.kind.vectors is None:
        without_vector_views(plat.repo)  # `feast-apply` refuses them on a store without vector search


@pytest.fixture(scope="session")
def applied_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's feature repository copied and applied once for the session (SQLite online store, Delta
    histories). A platform on SQLite copies its ``data/`` (registry, online tables, empty histories: nothing
    in them names the folder) instead of running `feast apply` again, which costs seconds of CPU each time."""
    root = copy_repo(PROJECT_ROOT / "feature_repo", tmp_path_factory.mktemp("applied") / "feature_repo")
    feast_apply(root)
    return root


def _platform(
    stack: StackHandle,
    tmp_path: Path,
    signals: bool,
    online: str = "sqlite",
    request: pytest.FixtureRequest | None = None,
) -> Iterator[Platform]:
    name = unique("fs")
    plat = make_platform(stack.settings, stack.admin, tmp_path, name, signals)
    use_online_store(plat, online, request)
    deploy(stack.settings, plat.definition, timeout_s=120)
    if online == "sqlite" and request is not None:
        applied: Path = request.getfixturevalue("applied_repo")
        shutil.copytree(applied / "data", plat.repo / "data")
    else:
        feast_apply(plat.repo)
    yield plat
    plat.stop_all()
    try:
        remove(stack.settings, plat.definition)
        with psycopg.connect(stack.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    except Exception as exc:  # cleanup must not hide the test's own failure
        print(f"cleanup of {name} failed: {exc}", file=sys.stderr)
