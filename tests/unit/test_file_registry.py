"""The demo repository's registry file, read while it is rewritten (stores/file_registry.py): a reader sees the
old registry or the new one, whole, never an empty or truncated one (Feast's own file store: ~half the reads)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import yaml
from feast.infra.registry.registry import (
    get_registry_store_class_from_scheme,
    get_registry_store_class_from_type,
)
from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.repo_config import RegistryConfig

from core.settings import PROJECT_ROOT

VIEWS = 40


def _demo_store_class() -> type:
    """The registry store class the demo's feature_store.yaml selects, resolved as Feast resolves it."""
    declared = yaml.safe_load((PROJECT_ROOT / "feature_repo" / "feature_store.yaml").read_text())["registry"]
    kind = declared.get("registry_store_type")
    return (
        get_registry_store_class_from_type(kind)
        if kind
        else get_registry_store_class_from_scheme(declared["path"])
    )  # type: ignore[no-any-return]


def _registry() -> RegistryProto:
    proto = RegistryProto()
    for i in range(VIEWS):
        view = FeatureViewProto()
        view.spec.name = f"view_{i}"
        view.spec.project = "shop"
        view.spec.description = "x" * 2000  # a registry of a realistic size: writes take a while
        proto.feature_views.append(view)
    return proto


def _rewrite(path: str, times: int) -> None:
    store = _demo_store_class()(RegistryConfig(path=path), Path("/"))
    for _ in range(times):
        store.update_registry_proto(_registry())


def test_a_reader_never_sees_a_half_written_registry(tmp_path: Path) -> None:
    path = tmp_path / "data" / "registry.db"
    store = _demo_store_class()(RegistryConfig(path=str(path)), Path("/"))
    store.update_registry_proto(_registry())
    path.chmod(0o640)  # as an operator set it for the model services' group
    writer = multiprocessing.get_context("spawn").Process(target=_rewrite, args=(str(path), 300))
    writer.start()
    whole = broken = 0
    while writer.is_alive():
        try:
            whole, broken = (
                (whole + 1, broken)
                if len(store.get_registry_proto().feature_views) == VIEWS
                else (whole, broken + 1)
            )
        except Exception:  # a truncated file that does not parse
            broken += 1
    writer.join(60)
    assert writer.exitcode == 0
    assert whole > 0 and broken == 0, f"{broken} of {whole + broken} reads saw a half-written registry"
    assert path.stat().st_mode & 0o777 == 0o640  # the file's permissions survive each replacement
    assert os.listdir(path.parent) == ["registry.db"]  # no temporary file left behind
