"""Pinned training sets: a point-in-time join saved with everything needed to build it again, bit for bit.

``save`` reads each view's history as it is now (the Delta table's version and its live files), **pins** those
files (hard links under the set's directory: the same bytes, no copy, on one filesystem; a copy across
filesystems), runs Feast's point-in-time join over exactly the pinned files (``stores.history.duckdb_store
.reading``), and writes:

- ``data.parquet``: the set, rows in the entity rows' order;
- ``entities.parquet``: the entity rows (keys, event_timestamp, labels) it was built from;
- ``manifest.json``: the query (feature references, the feature service, full_feature_names), per view its
  history's path, Delta version, pinned files and a fingerprint of its definition, the row count, and the
  **content hash** (SHA-256 of the set as canonical Arrow IPC: the values and types, not a file's encoding);
- a Feast ``SavedDataset`` of that name in the registry (storage: ``data.parquet``; tags: the hash and the
  manifest), so ``store.get_saved_dataset(name)`` and drift's ``training:<name>`` reference read it.

``rebuild`` runs the same join over the pinned files and the saved entity rows and compares hashes. New changes,
``featurectl compact`` (which rewrites days into new files and vacuums the old ones) and Delta's log retention
do not reach the pinned files: their links keep the data on disk however the history moves on, until
``drop`` removes the set (then the space of the files no longer live is freed). A view whose definition
changed since (features, types, keys, ttl, aggregations) makes ``rebuild`` refuse, naming the view: the same
query over a different view is not the same set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from core.errors import ConfigError

logger = logging.getLogger(__name__)

ROW = "__featurectl_row"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Built:
    table: pa.Table
    sha256: str


def datasets_dir(store: FeatureStore) -> Path:
    """Where saved sets live: ``data/datasets/`` of the feature repository (beside the histories)."""
    return Path(str(store.config.repo_path)) / "data" / "datasets"


def canonical(table: pa.Table) -> pa.Table:
    """``table`` as its Parquet file reads back (the types Parquet keeps), schema metadata left out (pandas and
    Feast put versions and indexes there): what ``data.parquet`` holds and what is hashed."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    return pq.read_table(pa.BufferReader(buffer.getvalue())).replace_schema_metadata(None).combine_chunks()


def content_hash(table: pa.Table) -> str:
    """SHA-256 of ``table`` in its canonical form as one Arrow IPC stream: equal values and types give equal
    hashes, whatever the chunking or the file's encoding."""
    canonical_table = canonical(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, canonical_table.schema) as writer:
        writer.write_table(canonical_table, max_chunksize=max(canonical_table.num_rows, 1))
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def fingerprint(view: Any) -> str:
    """What of a view changes the rows a join gives: its features and entity columns (names, types, tags),
    ttl, batch source fields and path."""
    source = view.batch_source
    described = {
        "features": [(f.name, str(f.dtype), sorted(f.tags.items())) for f in view.features],
        "entities": [(c.name, str(c.dtype)) for c in view.entity_columns],
        "ttl": view.ttl.total_seconds() if view.ttl else 0,
        "source": [
            getattr(source, "path", None),
            getattr(source, "timestamp_field", None),
            getattr(source, "created_timestamp_column", None),
        ],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _refs(store: FeatureStore, features: list[str] | None, service: str | None) -> list[str]:
    from feast import utils

    if service:
        return list(
            utils._get_features(
                store.registry, store.project, store.get_feature_service(service), allow_cache=True
            )
        )
    if not features:
        raise ConfigError("a dataset needs features", "give --features view:feature,... or --service NAME")
    return list(features)


def _views(store: FeatureStore, refs: list[str], service: str | None) -> list[Any]:
    names = (
        [p.name for p in store.get_feature_service(service).feature_view_projections]
        if service
        else sorted({r.split(":", 1)[0] for r in refs})
    )
    return [store.get_feature_view(n) for n in dict.fromkeys(names)]


def _join(
    store: FeatureStore, entities: pd.DataFrame, refs: list[str], full: bool, files: dict[str, list[str]]
) -> Built:
    """Feast's point-in-time join over exactly ``files`` (history path -> its files), rows in entity order."""
    from stores.history.duckdb_store import reading

    frame = entities.copy()
    frame[ROW] = range(len(frame))
    with reading(files):
        table = store.get_historical_features(
            entity_df=frame, features=refs, full_feature_names=full
        ).to_arrow()
    import pyarrow.compute as pc

    table = table.take(pc.sort_indices(table.column(ROW))).drop_columns([ROW])
    names = [c for c in entities.columns] + [c for c in table.column_names if c not in entities.columns]
    table = canonical(table.select(names))
    return Built(table, content_hash(table))


def _pin(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem (or links refused): the bytes are copied
        shutil.copy2(source, target)


def save(
    store: FeatureStore,
    name: str,
    entities: pd.DataFrame,
    features: list[str] | None = None,
    service: str | None = None,
    full_feature_names: bool = False,
    replace: bool = False,
) -> dict[str, Any]:
    """Build, pin, write and register the set ``name`` (module docstring); returns its manifest."""
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
    from feast.saved_dataset import SavedDataset

    from stores.history.reader import History

    if "event_timestamp" not in entities.columns:
        raise ConfigError(
            f"dataset {name}: the entity rows have no event_timestamp column",
            "give each row its label time in a column named event_timestamp",
        )
    directory = datasets_dir(store) / name
    if directory.exists():
        if not replace:
            raise ConfigError(
                f"dataset {name} exists ({directory})",
                f"pick another name, `featurectl dataset drop {name}` first, or pass --replace",
            )
        shutil.rmtree(directory)
    refs = _refs(store, features, service)
    views = _views(store, refs, service)
    staging = directory.with_name(f".{name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    pinned: dict[str, list[str]] = {}
    described: dict[str, Any] = {}
    for view in views:
        history = History(store, view)
        version = None
        if history.delta and history.exists():
            from deltalake import DeltaTable

            version = DeltaTable(str(history.path)).version()
        live = history.files()
        names = []
        for i, file in enumerate(live):
            relative = os.path.relpath(file.removeprefix("file://"), history.path)
            pin = Path("inputs") / view.name / f"{i:06d}-{Path(relative).name}"
            _pin(Path(file.removeprefix("file://")), staging / pin)
            names.append({"file": relative, "pinned": str(pin), "bytes": (staging / pin).stat().st_size})
        described[view.name] = {
            "history": str(history.path),
            "delta_version": version,
            "files": names,
            "definition": fingerprint(view),
        }
        pinned[str(history.path.resolve())] = [str((staging / f["pinned"]).resolve()) for f in names]
    ordered = entities.reset_index(drop=True)
    built = _join(store, ordered, refs, full_feature_names, pinned)
    pq.write_table(built.table, staging / "data.parquet")
    pq.write_table(pa.Table.from_pandas(ordered, preserve_index=False), staging / "entities.parquet")
    manifest = {
        "name": name,
        "created_at": datetime.now(UTC).isoformat(),
        "query": {"features": refs, "feature_service": service, "full_feature_names": full_feature_names},
        "views": described,
        "rows": built.table.num_rows,
        "columns": built.table.column_names,
        "content_sha256": built.sha256,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    staging.rename(directory)
    keys = sorted({k for v in views for k in v.join_keys})
    registered = SavedDataset(
        name=name,
        features=refs,
        join_keys=keys,
        full_feature_names=full_feature_names,
        storage=SavedDatasetFileStorage(path=str(directory / "data.parquet")),
        tags={
            "featurectl.content_sha256": built.sha256,
            "featurectl.manifest": str(directory / MANIFEST),
        },
        feature_service_name=service,
    )
    times = pd.to_datetime(ordered["event_timestamp"], utc=True)
    registered.min_event_timestamp = times.min().to_pydatetime()
    registered.max_event_timestamp = times.max().to_pydatetime()
    store.registry.apply_saved_dataset(registered, store.project, commit=True)
    logger.info("dataset %s: %d rows, sha256 %s, %s", name, built.table.num_rows, built.sha256, directory)
    return manifest


def load(store: FeatureStore, name: str) -> tuple[Path, dict[str, Any]]:
    directory = datasets_dir(store) / name
    try:
        return directory, json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        known = ", ".join(names(store)) or "none saved"
        raise ConfigError(
            f"no saved dataset {name} under {directory.parent}", f"pick one of: {known}"
        ) from None


def names(store: FeatureStore) -> list[str]:
    root = datasets_dir(store)
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def rebuild(store: FeatureStore, name: str, output: Path | None = None) -> tuple[dict[str, Any], Built]:
    """The set built again from its pinned files and entity rows; returns the manifest and what was built
    (compare ``built.sha256`` with ``manifest['content_sha256']``)."""
    directory, manifest = load(store, name)
    files: dict[str, list[str]] = {}
    for view_name, saved in manifest["views"].items():
        try:
            view = store.get_feature_view(view_name)
        except Exception:
            raise ConfigError(
                f"dataset {name}: its view {view_name} is no longer in the registry",
                "apply the view again as it was when the set was saved",
            ) from None
        if fingerprint(view) != saved["definition"]:
            raise ConfigError(
                f"dataset {name}: view {view_name} changed since the set was saved "
                "(its features, types, keys, ttl or source)",
                "the same query over another definition is another set: save a new one",
            )
        pins = [directory / f["pinned"] for f in saved["files"]]
        missing = [str(p) for p in pins if not p.is_file()]
        if missing:
            raise ConfigError(
                f"dataset {name}: {len(missing)} pinned file(s) of {view_name} are gone (e.g. {missing[0]})",
                "something removed files under the set's directory; the set cannot be rebuilt exactly",
            )
        from stores.history.reader import History

        files[str(History(store, view).path.resolve())] = [str(p.resolve()) for p in pins]
    entities = pq.read_table(directory / "entities.parquet").to_pandas()
    query = manifest["query"]
    built = _join(store, entities, query["features"], query["full_feature_names"], files)
    if output is not None:
        pq.write_table(built.table, output)
    return manifest, built


def drop(store: FeatureStore, name: str) -> int:
    """Remove the set and its pins (the registry's SavedDataset too); returns the bytes its directory held."""
    directory, _ = load(store, name)
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    shutil.rmtree(directory)
    try:
        store.registry.delete_saved_dataset(name, store.project, commit=True)
    except Exception as exc:  # not registered (saved by hand, a registry replaced): the files are gone anyway
        logger.info("dataset %s: not in the registry (%s)", name, exc)
    return size
