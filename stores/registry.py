"""Which online store feature_store.yaml declares, and what it can do: one folder per store.

Each store is a package ``stores/<name>/`` whose ``__init__`` declares ``KIND`` (an OnlineStoreKind):
the ``type:`` values of feature_store.yaml it answers to (old names too), whether each indexes vectors, its
sink, its re-embedding, how its driver's errors are told apart, its health probe, its capabilities, its
packages and its local server (stores/local.py) with its settings (``stores/<name>/settings.py``). The
stack, the CLI, the settings, the processor, the tests and the benches read these declarations: adding a
store means adding a folder (docs/stores.md, "Adding a store"). The Feast plugin itself
(``stores/<name>/feast.py``) is what Feast loads from the ``type:``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError

if TYPE_CHECKING:
    from feast import FeatureStore

    from core.settings import Settings
    from stores.feast_layout import FeastLayoutSink
    from stores.local import LocalServer, LocalService
    from stores.transactions import State
    from stores.vector_store import VectorStore


@dataclass(frozen=True)
class OnlineStoreKind:
    """An online store: its folder's declaration of what it is and what it can do."""

    name: str  # the folder, stores/<name>/
    label: str  # for people: "Postgres + pgvector"
    types: dict[str, bool]  # feature_store.yaml `type:` -> whether it indexes vectors (canonical first)
    sink: str  # "module:Class" of its OnlineSink
    vectors: str | None = None  # "module:Class" of its VectorStore (re-embedding), if it holds vectors
    # Capabilities, read instead of names: readers and writers on any number of hosts; writers that do not take
    # turns (`process --workers N` adds throughput); a flush applied all or nothing.
    many_hosts: bool = False
    parallel_writes: bool = False
    transactions: bool = False
    # Readers see a source transaction's changes all or none (stores/transactions.py: its sink holds a transaction's
    # rows until every change of it is written, and a reader's lookup is one snapshot).
    atomic_source_transactions: bool = False
    # The requirements its driver and local server need (`featurectl stack install --with` installs them), and
    # pyproject.toml's extra holding them for `pip install '.[extra]'` (tests keep the two equal).
    packages: tuple[str, ...] = field(default_factory=tuple)
    extra: str | None = None
    # Of those, what a host needs to reach a server of this kind run elsewhere (the driver, not the local server):
    # pyproject.toml's `clients` extra, which the image installs (Dockerfile) for every store.
    clients: tuple[str, ...] = field(default_factory=tuple)
    local: LocalService | None = None  # its local server, if this machine can run one
    # Whether it joins the scalar-feature integration tests (SCALAR_STORES); every store runs ALL_STORES.
    scalar_tests: bool = True
    # The types whose Feast reader computes aggregation views at read time (stores/contributions.py).
    aggregating: tuple[str, ...] = ()
    # "module:function" telling its driver's errors apart: True transient (the store is down, restarting,
    # failing over, overloaded: wait and retry), False terminal (this record's fault), None not its driver's.
    errors: str | None = None
    # "module:function" taking a FeatureStore: where the store answered, or its driver's error (health).
    probe: str | None = None

    @property
    def canonical(self) -> str:
        return next(iter(self.types))

    @property
    def hosts(self) -> str:
        return "any number of hosts" if self.many_hosts else "one host"

    def install_hint(self) -> str:
        if self.local is not None:
            return f"featurectl stack install --with {self.local.name}"
        return "pip install " + " ".join(f"'{p}'" for p in self.packages)

    def server(self, settings: Settings) -> LocalServer:
        """Its local server (ConfigError when it declares none, or its packages are missing)."""
        if self.local is None:
            raise ConfigError(f"the {self.label} online store has no local server", "run your own")
        cls: Any = _load(self, self.local.server)
        server: LocalServer = cls(settings)
        return server

    def declared_locally(self, settings: Settings, online: dict[str, Any]) -> bool:
        """Whether feature_store.yaml's ``online_store:`` mapping names this store's local server."""
        if self.local is None or online.get("type") not in self.types:
            return False
        if self.local.declared_by is None:
            return False
        check: Any = _load(self, self.local.declared_by)
        return bool(check(settings, online))

    def indexes_vectors(self, type_: str) -> bool:
        return self.types.get(type_, False)

    def open_sink(self, store: FeatureStore) -> FeastLayoutSink:
        """This store's sink for ``store`` (ConfigError naming the missing driver and its install)."""
        cls: Any = _load(self, self.sink)
        sink: FeastLayoutSink = cls(store)
        return sink

    def vector_store(self, store: FeatureStore) -> VectorStore | None:
        """Its re-embedding side, None when the store keeps no vectors."""
        if self.vectors is None:
            return None
        cls: Any = _load(self, self.vectors)
        vectors: VectorStore = cls(store)
        return vectors


def _load(kind: OnlineStoreKind, target: str) -> object:
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ConfigError(f"the {kind.label} online store needs {exc.name}", kind.install_hint()) from None


@cache
def kinds() -> tuple[OnlineStoreKind, ...]:
    """Every store folder under stores/ that declares a KIND."""
    import stores

    found = []
    for info in pkgutil.iter_modules(stores.__path__):
        if info.ispkg:
            kind = getattr(importlib.import_module(f"stores.{info.name}"), "KIND", None)
            if isinstance(kind, OnlineStoreKind):
                found.append(kind)
    return tuple(sorted(found, key=lambda k: k.name))


def local_services() -> dict[str, OnlineStoreKind]:
    """The stores with a local server, by its name (`featurectl stack up --with NAME`)."""
    return {k.local.name: k for k in kinds() if k.local is not None}


def classify(exc: BaseException) -> bool | None:
    """Whether a store's driver calls ``exc`` transient (True) or terminal (False); None if no store's
    driver raised it. A store whose driver is not installed cannot have raised it, and is skipped."""
    for kind in kinds():
        if kind.errors is None:
            continue
        try:
            judge: Any = _load(kind, kind.errors)
        except ConfigError:
            continue
        verdict: bool | None = judge(exc)
        if verdict is not None:
            return verdict
    return None


def probe(store: FeatureStore) -> str:
    """Is ``store``'s online store answering: its label and where, or the driver's error raised."""
    kind = kind_of(store)
    if kind.probe is None:
        return f"{kind.label} (no probe declared)"
    check: Any = _load(kind, kind.probe)
    return f"{kind.label}: {check(store)}"


def supported() -> str:
    """The `type:` values the processor writes, for error messages."""
    return ", ".join(f"{t} ({k.label})" for k in kinds() for t in k.types)


def vector_types() -> str:
    """The `type:` values that index vectors, for error messages."""
    return " or ".join(f"{t} ({k.label})" for k in kinds() for t, v in k.types.items() if v)


def kind_of(store: FeatureStore) -> OnlineStoreKind:
    """The store folder of ``store``'s online store; ConfigError naming the supported types otherwise."""
    type_ = store.config.online_store.type
    for kind in kinds():
        if type_ in kind.types:
            return kind
    raise ConfigError(
        f"online store type {type_!r} is not supported by the stream processor",
        f"use one of: {supported()} in feature_store.yaml",
    )


def indexes_vectors(store: FeatureStore) -> bool:
    """Whether ``store``'s online store keeps and searches vectors."""
    return kind_of(store).indexes_vectors(store.config.online_store.type)


def vector_view_problems(store: FeatureStore, views: list[Any]) -> list[str]:
    """A problem per view with a vector field when ``store``'s online store keeps no vectors."""
    from embeddings.spec import spec_for

    kind = kind_of(store)
    if kind.vectors is not None:
        return []
    return [
        f"feature view {v.name} has vector features, and the {kind.label} online store has no vector "
        f"search: keep it on {vector_types()}"
        for v in views
        if spec_for(v) is not None
    ]


def aggregation_view_problems(store: FeatureStore, views: list[Any]) -> list[str]:
    """A problem per aggregation view (aggregations/spec.py) the configured online store cannot serve, and
    per broken aggregation declaration."""
    from aggregations.spec import aggregation_problems

    kind = kind_of(store)
    type_ = store.config.online_store.type
    stores = " or ".join(t for k in kinds() for t in k.aggregating)
    return aggregation_problems(
        views,
        None if type_ in kind.aggregating else f"the {kind.label} online store (type {type_}); use {stores}",
    )


def open_online_sink(store: FeatureStore) -> FeastLayoutSink:
    """A sink writing ``store``'s online store; ConfigError naming the supported types otherwise."""
    return kind_of(store).open_sink(store)


def transaction_state(store: FeatureStore) -> State | None:
    """How the online store holds source transactions now (stores/transactions.py); None where it keeps none."""
    if not kind_of(store).atomic_source_transactions:
        return None
    sink = open_online_sink(store)
    try:
        return sink.transaction_state()
    finally:
        sink.close()
