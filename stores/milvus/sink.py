"""Milvus as the processor's online sink: the layout of stores/milvus/layout.py, with the version guard.

Milvus has no transactions, no server-side scripts and no conditional write (an insert over an existing
primary key replaces the row: checked on milvus-lite 3.2), so the flush skeleton (stores/feast_layout.py)
runs as a sequence of calls, serialised between writers by a lock file on the host. What holds:

- **Ordering / version guard: holds for every writer on one host.** Each entity's stored version lives in
  ``featurectl_<project>_versions`` (read before the write, written after it): an older change than the
  stored one is skipped. The read, the decision and the writes of a flush run under an exclusive ``flock``
  of a lock file named after the Milvus address, database and project (``host_lock``), so a processor,
  ``materialize``, ``replay`` and re-embedding on this host never interleave (the lock goes with the
  process if it dies). milvus-lite (what ``stack up`` runs) listens on 127.0.0.1 only, so every writer of
  it is on its host and the guard is complete there. **With a Milvus on other hosts, writers on different
  hosts are not serialised**: two of them writing one entity at the same moment can leave the older value
  until the entity's next change (``featurectl verify`` finds it). Run the online store's writers on one
  host, or use Postgres or Redis, whose guard runs inside the store. A crash between the feature write and
  the version write is safe: the batch is re-read from the committed offset and the same versions apply
  again.
- **Deletes: hold.** The entity's row leaves the view's collection (reads answer absent, search skips it);
  its version stays with ``deleted`` (the tombstone), so an older change delivered later cannot revive it.
- **TRUNCATE: holds** (a barrier per view; the live entities below it are deleted).
- **Re-embedding on a model change: holds** (stores/milvus/feast.py ``declare``, stores/milvus/reembed.py);
  a row embedded with a model other than the declared one is refused (TransientError) and re-embedded.
- **Fencing: holds on one host** (the epochs are checked under the lock, before the writes, so a processor
  that lost its partitions in a rebalance writes nothing more). Across hosts the check and the writes are
  separate calls: a claim landing while a flush writes lets that one flush finish, the case above.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from feast import FeatureStore, FeatureView
from feast.type_map import feast_value_type_to_python_type

from core.errors import ConfigError
from embeddings.spec import EmbeddingSpec, spec_for, text_hash
from stores.feast_layout import (
    Decision,
    FeastLayoutSink,
    Latest,
    Stored,
    Version,
    fenced,
    lost_partitions,
    refuse_other_models,
)
from stores.milvus import KIND, layout
from stores.milvus.feast import CHUNK, TYPE, MilvusOnlineStore, index_options
from stores.milvus.layout import (
    MODEL,
    PLACEHOLDER,
    PLACEHOLDER_DIM,
    SEARCHABLE,
    TEXT_HASH,
    TEXT_VERSION,
    quoted,
)
from stores.milvus.lock import address, host_lock
from stores.ordering import epoch_us
from stores.sink import DELETE, Partition, SinkRow, StoredVector

logger = logging.getLogger(__name__)
_NO_VECTOR = [0.0] * PLACEHOLDER_DIM
CONNECT_S = 30.0


def connect(store: FeatureStore) -> Any:
    """A Milvus client for ``store``'s online store (a ConfigError naming the fix if it does not answer)."""
    config = store.config.online_store
    if config.type not in KIND.types:
        raise ConfigError(f"online store type {config.type!r} is not Milvus", f"use `type: {TYPE}`")
    deadline = time.monotonic() + CONNECT_S
    while True:
        try:
            return MilvusOnlineStore()._connect(store.config)  # type: ignore[no-untyped-call]
        except Exception as exc:
            if time.monotonic() < deadline:  # a busy server misses one connect; a down one all of them
                logger.info("Milvus did not answer (%s); retrying", exc)
                time.sleep(1)
                continue
            error = exc
            break
    where = config.uri or f"{config.host}:{config.port}"
    raise ConfigError(
        f"Milvus at {where} does not answer after {CONNECT_S:.0f} s: {error}",
        "start it (`featurectl stack up` starts milvus-lite when feature_store.yaml asks for Milvus) or "
        "fix host/port (or uri) under online_store in feature_store.yaml",
    ) from None


def _local(where: str) -> bool:
    return any(host in where for host in ("127.0.0.1", "localhost", "[::1]"))


class MilvusOnlineSink(FeastLayoutSink):
    """Writes feature rows into the Milvus layout, the version guard read before and written after."""

    def __init__(self, store: FeatureStore) -> None:
        super().__init__(store)
        self._client = connect(store)
        self._names = layout.ensure_bookkeeping(self._client, self.project)
        self._index = index_options(store.config.online_store)
        self.vectors_enabled = bool(getattr(store.config.online_store, "vector_enabled", False))
        self._pending: list[SinkRow] = []
        self._barriers: dict[str, Version] = {}
        self._ready: set[tuple[str, int]] = set()  # (view, id of its declaration) whose collection exists
        if not _local(address(store.config)):
            logger.warning(
                "Milvus at %s is not on this host: writers on other hosts are not serialised with this one "
                "(stores/milvus/sink.py); run the online store's writers on one host",
                address(store.config),
            )

    def _collection(self, view: FeatureView) -> str:
        if (view.name, id(view)) not in self._ready:
            layout.ensure_view(self._client, self.project, view, self._index)
            self._ready.add((view.name, id(view)))
        return layout.collection_name(self.project, view)

    def _ident(self, view: str, key: bytes) -> str:
        return f"{view}|{key.hex()}"

    # --- buffering and fencing ------------------------------------------------------------------
    def discard(self) -> None:
        self._pending.clear()
        self._barriers.clear()

    def claim(self, partitions: Sequence[Partition], owner: str) -> dict[Partition, int]:
        with host_lock(self.store.config):  # read, increment, write: one claimer at a time
            return self._claim(partitions, owner)

    def _claim(self, partitions: Sequence[Partition], owner: str) -> dict[Partition, int]:
        fields = [f"{t}|{p}" for t, p in partitions]
        current = self._epochs(fields)
        out: dict[Partition, int] = {}
        records = []
        for field, partition in zip(fields, partitions, strict=True):
            out[partition] = current.get(field, (0, ""))[0] + 1
            records.append(
                {"partition": field, "epoch": out[partition], "owner": owner, PLACEHOLDER: _NO_VECTOR}
            )
        if records:
            self._client.upsert(self._names["fences"], records)
        return out

    def _epochs(self, fields: list[str]) -> dict[str, tuple[int, str]]:
        if not fields:
            return {}
        hits = self._client.query(
            self._names["fences"],
            filter=f"partition in {quoted(fields)}",
            output_fields=["partition", "epoch", "owner"],
        )
        return {h["partition"]: (int(h["epoch"]), h["owner"]) for h in hits}

    def _check_fences(self, tx: Any = None) -> None:
        if not self._held:
            return
        fields = {f"{t}|{p}": (t, p) for t, p in sorted(self._held)}
        stored = [
            (*fields[f], epoch, owner, None) for f, (epoch, owner) in self._epochs(list(fields)).items()
        ]
        lost = lost_partitions(self._held, stored)
        if lost:
            raise fenced(lost)

    # --- the write ------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # No transactions in Milvus: writers on this host take turns (the module docstring says the rest).
        with host_lock(self.store.config):
            yield None

    def _check_views(self, views: dict[str, FeatureView]) -> None:
        for view in views.values():
            if spec_for(view) is not None and not self.vectors_enabled:
                raise ConfigError(
                    f"feature view {view.name} declares an embedding, but the online store has no vectors",
                    "set `vector_enabled: true` under online_store in feature_store.yaml and run feast apply",
                )

    def _write_barriers(self, tx: Any, views: set[str]) -> dict[str, Version]:
        names = sorted(set(self._barriers) | views)
        held = (
            {
                h["view"]: (int(h["version"]), int(h["minor"]))
                for h in self._client.query(
                    self._names["barriers"],
                    filter=f"view in {quoted(names)}",
                    output_fields=["view", "version", "minor"],
                )
            }
            if names
            else {}
        )
        raised = {v: b for v, b in self._barriers.items() if b > held.get(v, (-1, -1))}
        if raised:
            self._client.upsert(
                self._names["barriers"],
                [
                    {"view": v, "version": b[0], "minor": b[1], PLACEHOLDER: _NO_VECTOR}
                    for v, b in raised.items()
                ],
            )
            held.update(raised)
        return {v: b for v, b in held.items() if v in views}

    def _stored(self, idents: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(idents), CHUNK):
            chunk = idents[start : start + CHUNK]
            for hit in self._client.query(
                self._names["versions"],
                filter=f"ident in {quoted(chunk)}",
                output_fields=["ident", "version", "minor", "event_us", "deleted", "join_keys"],
            ):
                out[hit["ident"]] = hit
        return out

    def _current_versions(self, tx: Any, idents: list[tuple[str, bytes]]) -> Stored:
        held = self._stored([self._ident(v, k) for v, k in idents])
        out: Stored = {}
        for view, key in idents:
            hit = held.get(self._ident(view, key))
            if hit is not None:
                out[(view, key)] = ((int(hit["version"]), int(hit["minor"])), int(hit["event_us"]))
        return out

    def _write(
        self, tx: Any, decision: Decision, views: dict[str, FeatureView], latest: Latest, current: Stored
    ) -> None:
        versions: list[dict[str, Any]] = []
        for view_name, items in decision.upserts.items():
            view = views[view_name]
            spec = spec_for(view)
            if spec is not None:
                self._check_model(spec, [r for _, r in items])
            self._upsert(view, spec, items)
            versions += [self._version(view_name, key, row, deleted=False) for key, row in items]
        for view_name, keys in decision.deletes.items():
            name = self._collection(views[view_name])
            field = layout.key_field(views[view_name])
            for start in range(0, len(keys), CHUNK):
                self._client.delete(
                    name, filter=f"{field} in {quoted([k.hex() for k in keys[start : start + CHUNK]])}"
                )
            rows = {key: row for (v, key), (row, _) in latest.items() if v == view_name}
            versions += [self._version(view_name, key, rows[key], deleted=True) for key in keys]
        # After the rows: a crash in between re-applies the batch at the same versions (not older: applied).
        for start in range(0, len(versions), CHUNK):
            self._client.upsert(self._names["versions"], versions[start : start + CHUNK])

    def _version(self, view: str, key: bytes, row: SinkRow, deleted: bool) -> dict[str, Any]:
        return {
            "ident": self._ident(view, key),
            "view": view,
            "version": row.version,
            "minor": row.version_minor,
            "event_us": epoch_us(row.event_time),
            "deleted": deleted,
            "join_keys": json.dumps(row.keys, default=str, sort_keys=True),
            PLACEHOLDER: _NO_VECTOR,
        }

    def _check_model(self, spec: EmbeddingSpec, rows: list[SinkRow]) -> None:
        """Refuse vectors of a model other than the declared one (a ``feast apply`` this writer missed)."""
        hits = self._client.query(
            self._names["models"], filter=f'view == "{spec.view}"', output_fields=["fingerprint"]
        )
        refuse_other_models(spec, hits[0]["fingerprint"] if hits else None, rows)

    def _upsert(
        self, view: FeatureView, spec: EmbeddingSpec | None, items: list[tuple[bytes, SinkRow]]
    ) -> None:
        name = self._collection(view)
        cols = layout.columns(view, self._index["dim"])
        encoded = layout.encode_columns(cols, [r.features for _, r in items])
        vector = layout.vector_column(view, self._index["dim"])
        held: dict[str, dict[str, Any]] = {}
        if vector is not None:  # the version of the change that set each text: kept while the text is
            held = self._texts(name, layout.key_field(view), [k.hex() for k, _ in items])
        records = []
        for (key, row), values in zip(items, encoded, strict=True):
            record = {
                layout.key_field(view): key.hex(),
                "event_ts": epoch_us(row.event_time),
                "created_ts": 0,
                **values,
            }
            if vector is None:
                record[PLACEHOLDER] = _NO_VECTOR
            else:
                embedded = row.features.get(vector.name)
                record[vector.name] = list(embedded) if embedded is not None else [0.0] * vector.dim
                record[SEARCHABLE] = embedded is not None
                text = spec.text_of(row.features) if spec is not None else None
                record[TEXT_HASH] = text_hash(text) if text is not None and embedded is not None else None
                record[MODEL] = row.model if embedded is not None else None
                before = held.get(key.hex(), {})
                same = record[TEXT_HASH] is not None and (before.get(TEXT_HASH), before.get(MODEL)) == (
                    record[TEXT_HASH],
                    record[MODEL],
                )
                record[TEXT_VERSION] = before.get(TEXT_VERSION) if same else row.version
            records.append(record)
        for start in range(0, len(records), CHUNK):
            self._client.upsert(name, records[start : start + CHUNK])

    def _texts(self, name: str, key_field: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), CHUNK):
            for hit in self._client.query(
                name,
                filter=f"{key_field} in {quoted(keys[start : start + CHUNK])}",
                output_fields=[key_field, TEXT_HASH, MODEL, TEXT_VERSION],
            ):
                out[hit[key_field]] = hit
        return out

    def _clear_below_barrier(self, tx: Any, view: FeatureView, barrier: Version) -> None:
        """A TRUNCATE: every live entity of the view stored below the barrier is deleted at the barrier."""
        now = datetime.now(UTC)
        rows = [
            SinkRow(view.name, DELETE, keys, {}, now, barrier[0], "t", "truncate", None, barrier[1])
            for keys, version in self._live(view.name)
            if version < barrier
        ]
        if not rows:
            return
        latest, views = self._latest(rows)
        decision = Decision(applied=rows, deletes={view.name: [k for _, k in latest]})
        self._write(tx, decision, views, latest, {})

    def _live(self, view: str) -> list[tuple[dict[str, Any], Version]]:
        out = []
        iterator = self._client.query_iterator(
            self._names["versions"],
            batch_size=1000,
            filter=f'view == "{view}" and deleted == false',
            output_fields=["join_keys", "version", "minor"],
        )
        try:
            while batch := iterator.next():
                out += [(json.loads(h["join_keys"]), (int(h["version"]), int(h["minor"]))) for h in batch]
        finally:
            iterator.close()
        return out

    def _live_before(self, view: str, cutoff_us: int) -> list[tuple[dict[str, Any], Version, int]]:
        out = []
        iterator = self._client.query_iterator(
            self._names["versions"],
            batch_size=1000,
            filter=f'view == "{view}" and deleted == false and event_us < {int(cutoff_us)}',
            output_fields=["join_keys", "version", "minor", "event_us"],
        )
        try:
            while batch := iterator.next():
                out += [
                    (json.loads(h["join_keys"]), (int(h["version"]), int(h["minor"])), int(h["event_us"]))
                    for h in batch
                ]
        finally:
            iterator.close()
        return out

    # --- reads ----------------------------------------------------------------------------------
    def _rows(
        self, view: FeatureView, keys: Sequence[dict[str, Any]], fields: list[str]
    ) -> list[dict[str, Any] | None]:
        serialised = [self._entity_key(view, k).hex() for k in keys]
        name, field = self._collection(view), layout.key_field(view)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(serialised), CHUNK):
            chunk = serialised[start : start + CHUNK]
            for hit in self._client.query(
                name, filter=f"{field} in {quoted(chunk)}", output_fields=[field, *fields]
            ):
                found[hit[field]] = hit
        return [found.get(k) for k in serialised]

    def current_features(self, view: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        feature_view = self._view(view)
        cols = [c for c in layout.columns(feature_view, self._index["dim"]) if not c.is_vector]
        out: list[dict[str, Any] | None] = []
        for hit in self._rows(feature_view, keys, [c.name for c in cols]):
            out.append(
                None
                if hit is None
                else {
                    c.name: feast_value_type_to_python_type(layout.decode(c, hit.get(c.name))) for c in cols
                }
            )
        return out

    def stored_vectors(
        self, spec: EmbeddingSpec, keys: Sequence[dict[str, Any]]
    ) -> list[StoredVector | None]:
        view = self._view(spec.view)
        hits = self._rows(view, keys, [spec.field, SEARCHABLE, TEXT_HASH, MODEL, TEXT_VERSION])
        out: list[StoredVector | None] = []
        for hit in hits:
            if (
                hit is None
                or not hit.get(SEARCHABLE)
                or hit.get(MODEL) != spec.fingerprint
                or not hit.get(TEXT_HASH)
            ):
                out.append(None)
                continue
            vector = np.asarray(hit[spec.field], dtype=np.float32).tobytes()
            out.append(StoredVector(hit[TEXT_HASH], int(hit.get(TEXT_VERSION) or 0), vector))
        return out

    def live_keys(self, view: str) -> list[dict[str, Any]]:
        return [keys for keys, _ in self._live(view)]

    def reset(self) -> int:
        """Every view's rows, the versions and the barriers removed; the collections stay."""
        with host_lock(self.store.config):
            return self._reset()

    def _reset(self) -> int:
        held = 0
        for view in self.store.list_feature_views():
            held += len(self._live(view.name))
            name = layout.collection_name(self.project, view)
            if self._client.has_collection(name):
                self._client.delete(name, filter=f'{layout.key_field(view)} != ""')
        self._client.delete(self._names["versions"], filter='ident != ""')
        self._client.delete(self._names["barriers"], filter='view != ""')
        return held

    def close(self) -> None:
        self._client.close()
