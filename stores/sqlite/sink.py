"""The Feast SQLite online store as a sink, with row-level deletes and per-entity ordering.

Feast's own SQLite writer upserts unconditionally and keeps event timestamps to the second, and
Feast has no row-level delete. This sink writes Feast's table layout itself (same serialisation,
so ``get_online_features`` reads it) and keeps, in the same database, the version (WAL position)
of the last change applied to each entity, including deletes (tombstones). In one write-locked
transaction (``BEGIN IMMEDIATE``: the version check and the write are atomic against every other
writer) it skips rows older than the stored version, upserts the rest and deletes deleted entities. Re-applying
a row is harmless, and an old change replayed after a newer one (or after a delete) is ignored.

Vector features go to the view's vector table of its declared model (stores.sqlite.vectors), in the
same transaction; a vector whose text is unchanged is not rewritten. A vector computed with a model
other than the one declared at the last ``feast apply`` is refused with a TransientError: the
processor re-reads the registry and re-embeds the batch with the declared model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from core.errors import ConfigError
from embeddings.spec import EmbeddingSpec, spec_for, text_hash
from stores import contributions, transactions
from stores.feast_layout import (
    Decision,
    FeastLayoutSink,
    Latest,
    Stored,
    fenced,
    lost_partitions,
    refuse_other_models,
)
from stores.ordering import epoch_us
from stores.sink import DELETE, Partition, SinkRow, StoredVector
from stores.sqlite import KIND
from stores.sqlite.db import (
    BARRIERS,
    CONTRIBUTIONS,
    FENCES,
    VERSIONS,
    connect,
    ensure_contributions_table,
    ensure_versions_table,
)
from stores.sqlite.feast import TYPE as VECTOR_STORE_TYPE
from stores.sqlite.vectors import (
    VectorTable,
    declared_fingerprint,
    delete_keys,
    ensure_models_table,
    vector_tables,
)
from stores.values import value_bytes

_key_and_name = itemgetter(0, 1)

logger = logging.getLogger(__name__)


class SqliteOnlineSink(FeastLayoutSink):
    """Writes feature rows to the SQLite online store of a Feast repository."""

    def __init__(self, store: FeatureStore) -> None:
        config = store.config
        if config.online_store.type not in KIND.types:
            raise ConfigError(
                f"online store type {config.online_store.type!r} is not a SQLite store",
                f"use `type: {VECTOR_STORE_TYPE}` in feature_store.yaml",
            )
        super().__init__(store)
        self.vectors_enabled = KIND.indexes_vectors(config.online_store.type)
        self.aggregates = config.online_store.type in KIND.aggregating
        path = Path(config.online_store.path)
        self.path = path if path.is_absolute() else Path(config.repo_path or ".") / path
        self._pending: list[SinkRow] = []
        self._barriers: dict[str, tuple[int, int]] = {}
        # WAL (set by connect): readers (feast serve, model services) are not blocked by the writer.
        self._conn = connect(self.path)
        ensure_versions_table(self._conn)
        ensure_models_table(self._conn)
        ensure_contributions_table(self._conn)
        for statement in transactions.schema(transactions.SQLITE):
            self._conn.execute(statement)
        transactions.migrate(self._conn, transactions.SQLITE)
        self._conn.commit()
        self._gate = transactions.Gate(transactions.SQLITE)
        self._evicted: dict[str, float] = {}  # view -> when its expired contributions were last dropped

    def discard(self) -> None:
        self._pending.clear()
        self._barriers.clear()
        if self._gate is not None:
            self._gate.discard()

    def claim(self, partitions: Sequence[Partition], owner: str) -> dict[Partition, int]:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self._conn.execute("BEGIN IMMEDIATE")
        with self._conn:
            for topic, partition in partitions:
                self._conn.execute(
                    f"INSERT INTO {FENCES} (topic, partition, epoch, owner, claimed_at) VALUES (?, ?, 1, ?, ?) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET epoch = epoch + 1, owner = excluded.owner, "
                    "claimed_at = excluded.claimed_at",
                    (topic, partition, owner, now),
                )
            return {
                (topic, partition): self._conn.execute(
                    f"SELECT epoch FROM {FENCES} WHERE topic = ? AND partition = ?", (topic, partition)
                ).fetchone()[0]
                for topic, partition in partitions
            }

    def _check_idle(self) -> None:
        self._check_fences(self._conn)  # a read: no write lock for an empty flush

    def _check_fences(self, tx: Any) -> None:
        """Inside the write transaction: refuse the flush if a held partition was claimed since."""
        if not self._held:
            return
        topics = sorted({topic for topic, _ in self._held})
        marks = ", ".join("?" * len(topics))
        rows = self._conn.execute(
            f"SELECT topic, partition, epoch, owner, claimed_at FROM {FENCES} WHERE topic IN ({marks})",
            topics,
        )
        lost = lost_partitions(self._held, rows)
        if lost:
            raise fenced(lost)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        # BEGIN IMMEDIATE takes the write lock before the stored versions are read, so the check and
        # the write are one atomic step: another writer (materialize, replay, a processor that lost
        # its partitions) waits for this transaction and cannot slip a newer row in between.
        self._conn.execute("BEGIN IMMEDIATE")
        with self._conn:  # one transaction: all or nothing
            yield self._conn

    def _write(
        self,
        tx: Any,
        decision: Decision,
        views: dict[str, FeatureView],
        latest: Latest,
        current: Stored,
    ) -> None:
        applied = decision.applied
        for view_name, keys in decision.deletes.items():
            if self._aggregation(views[view_name]) is not None:
                self._conn.executemany(
                    contributions.delete_sql("?"), [(view_name, contributions.ident_of(k)) for k in keys]
                )
                continue
            table = compute_table_id(self.project, views[view_name], self.versioning)
            self._conn.executemany(f'DELETE FROM "{table}" WHERE entity_key = ?', [(k,) for k in keys])
        key_of = {id(row): key for (_, key), (row, _) in latest.items()}
        for view_name, items in decision.upserts.items():
            spec = self._aggregation(views[view_name])
            if spec is not None:
                stored, expired = contributions.records(spec, [r for _, r in items])
                self._conn.executemany(contributions.upsert_sql("?"), stored)
                self._conn.executemany(contributions.delete_sql("?"), expired)
                self._evict(spec)
                continue
            self._upsert(views[view_name], items)
        self._write_vectors(views, latest, applied)
        self._conn.executemany(
            f"INSERT INTO {VERSIONS} (view, entity_key, version, version_minor, event_us, deleted, join_keys) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (view, entity_key) DO UPDATE SET "
            "version = excluded.version, version_minor = excluded.version_minor, "
            "event_us = excluded.event_us, deleted = excluded.deleted",
            [
                (
                    r.view,
                    key_of[id(r)],
                    r.version,
                    r.version_minor,
                    epoch_us(r.event_time),
                    int(r.op == DELETE),
                    # Read only for a new entity: an existing one's row keeps its join_keys.
                    "" if (r.view, key_of[id(r)]) in current else json.dumps(r.keys, default=str),
                )
                for r in applied
            ],
        )

    def _write_barriers(self, tx: Any, views: set[str]) -> dict[str, tuple[int, int]]:
        """Store the pending TRUNCATE barriers (never lowering one); return those of ``views`` and the new ones."""
        for view, (version, minor) in self._barriers.items():
            self._conn.execute(
                f"INSERT INTO {BARRIERS} (view, version, version_minor) VALUES (?, ?, ?) ON CONFLICT (view) DO "
                "UPDATE SET version = excluded.version, version_minor = excluded.version_minor "
                "WHERE (excluded.version, excluded.version_minor) > (version, version_minor)",
                (view, version, minor),
            )
        self._barriers.clear()
        wanted = sorted(views)
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        rows = self._conn.execute(
            f"SELECT view, version, version_minor FROM {BARRIERS} WHERE view IN ({marks})", wanted
        )
        return {view: (version, minor) for view, version, minor in rows}

    def _current_versions(self, tx: Any, idents: list[tuple[str, bytes]]) -> Stored:
        """Stored (version, commit time in µs) per entity."""
        out: Stored = {}
        by_view: dict[str, list[bytes]] = {}
        for view, key in idents:
            by_view.setdefault(view, []).append(key)
        for view, keys in by_view.items():
            # One view and an IN list: a single index range per chunk (an OR of pairs is planned far slower).
            for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit (999)
                chunk = keys[i : i + 900]
                marks = ", ".join("?" * len(chunk))
                for key, version, minor, event_us in self._conn.execute(
                    f"SELECT entity_key, version, version_minor, event_us FROM {VERSIONS} "
                    f"WHERE view = ? AND entity_key IN ({marks})",
                    [view, *chunk],
                ):
                    out[(view, key)] = ((version, minor), event_us)
        return out

    def _spec(self, view: FeatureView) -> EmbeddingSpec | None:
        spec = spec_for(view)
        if spec is not None and not self.vectors_enabled:
            raise ConfigError(
                f"feature view {view.name} declares an embedding, but the online store cannot index vectors",
                f"set `online_store: type: {VECTOR_STORE_TYPE}` in feature_store.yaml and run feast apply",
            )
        return spec

    def _write_vectors(
        self,
        views: dict[str, FeatureView],
        latest: Latest,
        applied: list[SinkRow],
    ) -> None:
        """Vectors of the applied rows into each view's declared-model table; deletes from every table."""
        done = {id(r) for r in applied}
        for view_name, view in views.items():
            spec = self._spec(view)
            if spec is None:
                continue
            rows = [
                (key, row)
                for (name, key), (row, _) in latest.items()
                if name == view_name and id(row) in done
            ]
            deleted = [key for key, row in rows if row.op == DELETE]
            if deleted:  # from every model's table: a deleted entity is found by no query
                for name in vector_tables(self._conn, self.project, view_name):
                    delete_keys(self._conn, name, deleted)
            upserts = [(key, row) for key, row in rows if row.op != DELETE]
            if not upserts:
                continue
            refuse_other_models(spec, declared_fingerprint(self._conn, view_name), (r for _, r in upserts))
            table = VectorTable(self.project, spec)
            held = table.lookup(self._conn, [key for key, _ in upserts])
            put, cleared = [], []
            for key, row in upserts:
                vector, text = row.features.get(spec.field), spec.text_of(row.features)
                if vector is None or text is None:
                    cleared.append(key)  # no text, no vector: the entity leaves similarity results
                    continue
                digest = text_hash(text)
                stored = held.get(key)
                if stored is None or stored.text_hash != digest:
                    put.append((key, vector, digest, row.version))
            table.delete(self._conn, cleared)
            table.put(self._conn, put)

    def _evict(self, spec: Any) -> None:
        """Drop contributions no window can reach any more, at most once a minute per view (inside the
        flush's transaction)."""
        now = contributions.now()
        if now.timestamp() - self._evicted.get(spec.view, 0.0) < 60:
            return
        self._evicted[spec.view] = now.timestamp()
        self._conn.execute(contributions.evict_sql("?"), (spec.view, contributions.evict_before(spec, now)))

    def current_features(self, view: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Each entity's stored feature values, decoded as Feast reads them; None if it has none."""
        feature_view = self._view(view)
        if self._aggregation(feature_view) is not None:  # a contribution's raw values
            held = {}
            for key in keys:
                vals = self._conn.execute(
                    f"SELECT vals FROM {CONTRIBUTIONS} WHERE view = ? AND source_row = ?", (view, key["_row"])
                ).fetchone()
                if vals is not None:
                    held[key["_row"]] = json.loads(vals[0])
            return [held.get(k["_row"]) for k in keys]
        table = compute_table_id(self.project, feature_view, self.versioning)
        serialised = [self._entity_key(feature_view, k) for k in keys]
        found: dict[bytes, dict[str, Any]] = {}
        for i in range(0, len(serialised), 400):  # SQLite's bound-parameter limit
            chunk = serialised[i : i + 400]
            marks = ", ".join("?" * len(chunk))
            for key, name, value in self._conn.execute(
                f'SELECT entity_key, feature_name, value FROM "{table}" WHERE entity_key IN ({marks})', chunk
            ):
                found.setdefault(key, {})[name] = feast_value_type_to_python_type(
                    ValueProto.FromString(value)
                )
        return [found.get(k) for k in serialised]

    def stored_vectors(
        self, spec: EmbeddingSpec, keys: Sequence[dict[str, Any]]
    ) -> list[StoredVector | None]:
        """The stored vector (and its text hash) of each entity under the spec's model, or None."""
        view = self._view(spec.view)
        serialised = [self._entity_key(view, k) for k in keys]
        held = VectorTable(self.project, spec).lookup(self._conn, serialised)
        return [held.get(k) for k in serialised]

    def _upsert(self, view: FeatureView, items: list[tuple[bytes, SinkRow]]) -> None:
        """One statement for all rows of a view; values converted a feature column at a time.

        An embedding view's vector is not stored here but in its model's vector table (``_write_vectors``); a
        plain vector view's is a value like the others (where Feast's own write puts it, and the plugin's
        exact search reads it).
        """
        table = compute_table_id(self.project, view, self.versioning)
        embedding = spec_for(view)
        # Feast's SQLite adapter stores a naive UTC datetime as int(dt.timestamp()); done once per
        # row here instead of once per feature value.
        created_ts = int(datetime.now(UTC).replace(tzinfo=None).timestamp())
        event_ts = {
            id(row): int(row.event_time.astimezone(UTC).replace(tzinfo=None).timestamp()) for _, row in items
        }
        params: list[tuple[Any, ...]] = []
        for feature in view.features:
            if embedding is not None and feature.name == embedding.field:
                continue
            values = [row.features.get(feature.name) for _, row in items]
            encoded = value_bytes(values, feature.dtype.to_value_type())
            for (key, row), value, raw in zip(items, values, encoded, strict=True):
                params.append(
                    (
                        key,
                        feature.name,
                        raw,
                        value if isinstance(value, str) else None,
                        event_ts[id(row)],
                        created_ts,
                    )
                )
        # In key order: the B-tree pages of one key range are touched together (~1.3x for new entities).
        params.sort(key=_key_and_name)
        self._conn.executemany(
            f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
            "created_ts = excluded.created_ts",
            params,
        )

    def _live_before(self, view: str, cutoff_us: int) -> list[tuple[dict[str, Any], tuple[int, int], int]]:
        rows = self._conn.execute(
            f"SELECT join_keys, version, version_minor, event_us FROM {VERSIONS} "
            "WHERE view = ? AND deleted = 0 AND event_us < ?",
            (view, cutoff_us),
        )
        return [(json.loads(j), (version, minor), event_us) for j, version, minor, event_us in rows]

    def reset(self) -> int:
        """Empty the online store: every view's rows and vectors, the versions and the barriers.

        For a source that was replaced (SourceChangedError); the tables stay, so readers keep working
        and see every entity as absent until the processor and a snapshot fill them again. Returns the
        number of entities the store held."""
        self._conn.execute("BEGIN IMMEDIATE")
        with self._conn:
            (held,) = self._conn.execute(f"SELECT count(*) FROM {VERSIONS} WHERE deleted = 0").fetchone()
            for view in self.store.list_feature_views():
                table = compute_table_id(self.project, view, self.versioning)
                self._conn.execute(f'DELETE FROM "{table}"')
                for name in vector_tables(self._conn, self.project, view.name):
                    self._conn.execute(f'DELETE FROM "{name}"')
            self._conn.execute(f"DELETE FROM {VERSIONS}")
            self._conn.execute(f"DELETE FROM {BARRIERS}")
            self._conn.execute(f"DELETE FROM {CONTRIBUTIONS}")
            for table in transactions.tables(transactions.SQLITE):
                self._conn.execute(f"DELETE FROM {table}")
            for statement in transactions.schema(transactions.SQLITE):
                self._conn.execute(statement)
        return int(held)

    def live_keys(self, view: str) -> list[dict[str, Any]]:
        """Join keys of every entity of ``view`` currently in the online store."""
        rows = self._conn.execute(f"SELECT join_keys FROM {VERSIONS} WHERE view = ? AND deleted = 0", (view,))
        return [json.loads(j) for (j,) in rows]

    def transaction_state(self) -> transactions.State:
        return transactions.state(self._conn)

    def close(self) -> None:
        self._conn.close()
