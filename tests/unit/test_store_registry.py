"""One folder per online store: the `type:` of feature_store.yaml picks it, old names keep working."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from feast.infra.online_stores.helpers import get_online_store_from_config
from feast.repo_config import get_online_config_from_type

from core.errors import ConfigError
from core.settings import Settings
from stores.registry import OnlineStoreKind, indexes_vectors, kind_of, kinds

ROOT = Path(__file__).resolve().parents[2]


def store_of(type_: str) -> Any:
    """A stand-in FeatureStore whose feature_store.yaml declares ``type_`` (kind_of reads only that)."""
    return SimpleNamespace(config=SimpleNamespace(online_store=SimpleNamespace(type=type_)))


def test_every_store_folder_declares_itself() -> None:
    folders = sorted(p.parent.name for p in (ROOT / "stores").glob("*/feast.py"))  # history/ is offline
    assert folders and [k.name for k in kinds()] == folders
    for kind in kinds():
        assert kind.sink.startswith(f"stores.{kind.name}.") and (kind.vectors or "").startswith(
            "" if kind.vectors is None else f"stores.{kind.name}."
        )
        # Its driver's errors told apart, and a health probe, in its own folder (stores/<name>/errors.py).
        for target in (kind.errors, kind.probe):
            assert target is not None and target.startswith(f"stores.{kind.name}."), (kind.name, target)
            module, _, attr = target.partition(":")
            assert callable(getattr(importlib.import_module(module), attr))
        if kind.local is not None:  # its local server and that server's settings in its folder too
            assert kind.local.server.startswith(f"stores.{kind.name}."), kind.local.server
            assert (ROOT / "stores" / kind.name / "settings.py").exists()
            assert kind.local.port in Settings.model_fields, kind.local.port
            assert all(secret in Settings.model_fields for secret in kind.local.secrets)


def test_each_stores_packages_are_its_pyproject_extra() -> None:
    """`pip install '.[extra]'` gives what `featurectl stack install --with` gives (KIND.packages)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for kind in kinds():
        if kind.extra is not None:
            assert set(kind.packages) <= set(extras[kind.extra]), (kind.name, kind.packages)
    by_extra: dict[str, set[str]] = {}
    for kind in kinds():
        if kind.extra is not None:
            by_extra.setdefault(kind.extra, set()).update(kind.packages)
    for extra, packages in by_extra.items():
        assert set(extras[extra]) == packages, f"pyproject.toml's {extra!r} extra holds more than its stores"


def test_the_clients_extra_holds_each_stores_clients() -> None:
    """The image installs `.[clients]` (Dockerfile): every store's driver, none of the local servers."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {p for kind in kinds() for p in kind.clients}
    assert set(extras["clients"]) == declared
    for kind in kinds():
        assert set(kind.clients) <= set(kind.packages), kind.name


@pytest.mark.parametrize(
    ("type_", "folder", "vectors"),
    [
        ("stores.sqlite.feast.VecSqliteOnlineStore", "sqlite", True),
        ("onlinestore.feast_store.VecSqliteOnlineStore", "sqlite", True),
        ("sqlite", "sqlite", False),
        ("stores.postgres.feast.PgVectorOnlineStore", "postgres", True),
        ("onlinestore.pg_store.PgVectorOnlineStore", "postgres", True),
        ("postgres", "postgres", False),
        ("stores.redis.feast.RedisOnlineStore", "redis", False),
        ("onlinestore.redis_store.RedisOnlineStore", "redis", False),
        ("redis", "redis", False),
        ("stores.milvus.feast.MilvusOnlineStore", "milvus", True),
    ],
)
def test_the_type_picks_the_folder(type_: str, folder: str, vectors: bool) -> None:
    assert kind_of(store_of(type_)).name == folder
    assert indexes_vectors(store_of(type_)) is vectors


@pytest.mark.parametrize(
    "type_",
    [
        "stores.sqlite.feast.VecSqliteOnlineStore",
        "onlinestore.feast_store.VecSqliteOnlineStore",
        "stores.postgres.feast.PgVectorOnlineStore",
        "onlinestore.pg_store.PgVectorOnlineStore",
        "stores.redis.feast.RedisOnlineStore",
        "onlinestore.redis_store.RedisOnlineStore",
        "stores.milvus.feast.MilvusOnlineStore",
    ],
)
def test_feast_loads_old_and_new_type_names(type_: str) -> None:
    config_class = get_online_config_from_type(type_)
    config = config_class(
        type=type_, **({"host": "h", "database": "d", "user": "u", "password": "p"} if "Pg" in type_ else {})
    )
    store = get_online_store_from_config(config)
    canonical = next(k for k in kinds() if type_ in k.types).canonical
    assert f"{type(store).__module__}.{type(store).__name__}" == canonical


def test_an_unknown_type_names_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as err:
        kind_of(store_of("dynamodb"))
    assert "'dynamodb' is not supported" in str(err.value)
    assert all(k.canonical in str(err.value) for k in kinds())


def test_a_missing_driver_names_the_install() -> None:
    kind = OnlineStoreKind(
        "nowhere", "a store", {"x": False}, sink="no_such_driver_mod:Sink", packages=("no-such-driver>=1",)
    )
    with pytest.raises(ConfigError) as err:
        kind.open_sink(store_of("x"))
    assert "no_such_driver_mod" in str(err.value) and "pip install 'no-such-driver>=1'" in str(err.value)
