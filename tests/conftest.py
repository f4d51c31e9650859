"""Fixtures both test levels share: each online store's local server (its folder's declaration), started once
per session."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT, Settings, ensure_secrets_file, load_settings
from stack.keycloak import Keycloak
from stack.launcher import GENERATED_SECRETS
from stores.local import LocalServer
from stores.registry import OnlineStoreKind, kinds

# pytest-xdist runs the suite in worker processes (dev.sh: -n 2), each with its own folder and ports (1000
# apart), so its own stack and servers: the tests of two workers never meet. The first keeps the defaults.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and int(_WORKER[2:]) > 0:
    os.environ.setdefault("PYTEST_FEATURECTL_DIR", f".stack-test-{_WORKER}")
    os.environ.setdefault("PYTEST_FEATURECTL_PORT_OFFSET", str(1000 * int(_WORKER[2:])))

# Under the same 0700 parent as the integration stack (tests/integration/conftest.py): the binaries
# and the cluster must work where the postgres OS user cannot traverse the clone.
# Ports and directories overridable, so lanes of tests/run.py (or a second checkout) run beside each other:
# PYTEST_FEATURECTL_DIR moves the folder, PYTEST_FEATURECTL_PORT_OFFSET every port, as for the stack.
_TEST_DIR = PROJECT_ROOT / os.environ.get("PYTEST_FEATURECTL_DIR", ".stack-test")
_OFFSET = int(os.environ.get("PYTEST_FEATURECTL_PORT_OFFSET", "0"))


def without_aggregation_views(repo: Path) -> None:
    """For a store whose Feast reader does not compute aggregation views: its user declares none
    (`featurectl feast-apply` refuses them there; docs/aggregations.md)."""
    path = repo / "orders.py"
    text = path.read_text()
    marker = "# Each change of an order as the aggregation view sees it"
    if marker in text:
        path.write_text(text[: text.index(marker)])
    services = repo / "feature_services.py"  # and the feature service reads none of them
    if services.exists():
        lines = services.read_text().splitlines(keepends=True)
        services.write_text("".join(line for line in lines if "customer_orders" not in line))


def without_vector_views(repo: Path) -> None:
    """For a store without vector search: its user declares no vector view."""
    views = repo / "products.py"
    text = views.read_text()
    views.write_text(text[: text.index("# History of product documents")])


@dataclass
class LocalStore:
    """A store's local server for the test session (its declaration: stores/<name>/__init__.py, KIND.local)."""

    kind: OnlineStoreKind
    server: LocalServer

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def yaml(self, namespace: str) -> str:
        """An ``online_store:`` block for feature_store.yaml writing to ``namespace`` (made if missing)."""
        return self.server.online_store(namespace)

    def use_in(self, repo: Path, namespace: str) -> None:
        """Point ``repo``'s feature_store.yaml at this store (``namespace``), leaving out the aggregation views
        if it cannot serve them (`feast-apply` refuses them there)."""
        path = repo / "feature_store.yaml"
        path.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", self.yaml(namespace), path.read_text()))
        if not self.kind.aggregating:
            without_aggregation_views(repo)

    def empty(self, namespace: str) -> None:
        """Every feature row in ``namespace`` deleted (tables, collections and indexes stay)."""
        self.server.empty(namespace)


def _local_store(kind: OnlineStoreKind) -> Iterator[LocalStore]:
    """``kind``'s local server on a port of its own (its default + 1000, + the worker's offset), for the session."""
    assert kind.local is not None
    data = _TEST_DIR / kind.local.name
    data.parent.mkdir(exist_ok=True)
    data.parent.chmod(0o700)
    default = Settings.model_fields[kind.local.port].default
    env = f"PYTEST_FEATURECTL_{kind.local.port.upper()}"
    port = int(os.environ.get(env, str(default + 1000 + _OFFSET)))
    settings = load_settings(data_dir=data, **{kind.local.port: port})
    server = kind.server(settings)
    server.stop()  # a previous run's leftovers
    server.wipe()
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    secrets = ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    server.start()
    server.bootstrap()
    # feature_store.yaml reads the store's passwords as ${FEATURECTL_...}; subprocesses inherit them.
    for name in kind.local.secrets:
        os.environ[f"FEATURECTL_{name.upper()}"] = secrets[name]
    yield LocalStore(kind, server)
    server.stop()
    server.wipe()


def _fixture(kind: OnlineStoreKind) -> object:
    def local_store() -> Iterator[LocalStore]:
        yield from _local_store(kind)

    local_store.__doc__ = f"The {kind.label} online store's local server, for the session."
    return pytest.fixture(scope="session", name=f"local_{kind.name}")(local_store)


# One session fixture per store with a local server: local_postgres, local_redis, local_milvus, ...
for _kind in kinds():
    if _kind.local is not None:
        globals()[f"local_{_kind.name}"] = _fixture(_kind)


@pytest.fixture(scope="session")
def local_keycloak() -> Iterator[Keycloak]:
    """The project's Keycloak (stack/keycloak.py) with its realm, on a port of its own, for the session."""
    data = _TEST_DIR / "keycloak"
    data.parent.mkdir(exist_ok=True)
    data.parent.chmod(0o700)
    port = Settings.model_fields["keycloak_port"].default + 1000 + _OFFSET
    keycloak = Keycloak(load_settings(data_dir=data, keycloak_port=port))
    keycloak.stop()  # a previous run's leftovers
    shutil.rmtree(data, ignore_errors=True)
    keycloak.start()
    keycloak.bootstrap()
    yield keycloak
    keycloak.stop()
    shutil.rmtree(data, ignore_errors=True)


_SUMMARIES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the lines tests recorded as ``summary`` (record_property); pytest-xdist brings workers' here."""
    if report.when == "call":
        _SUMMARIES.extend(str(value) for name, value in report.user_properties if name == "summary")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print them at the end of the run: figures a check measured (the demo's install size)."""
    for line in _SUMMARIES:
        terminalreporter.write_line(line)
