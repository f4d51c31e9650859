"""The Feast SQLite online store as a sink, with row-level deletes and per-entity ordering.

Feast's own SQLite writer upserts unconditionally and keeps event timestamps to the second, and
Feast has no row-level delete. This sink writes Feast's table layout itself (same serialisation,
so ``get_online_features`` reads it) and keeps, in the same database, the version (WAL position)
of the last change applied to each entity, including deletes (tombstones). In one transaction it
skips rows older than the stored version, upserts the rest and deletes deleted entities. Re-applying
a row is harmless, and an old change replayed after a newer one (or after a delete) is ignored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Importing Feast's SQLite store registers the datetime adapters its tables are written with.
import feast.infra.online_stores.sqlite  # noqa: F401
from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values

from featurectl.errors import ConfigError
from streams.sinks.base import DELETE, OnlineSink, SinkRow

logger = logging.getLogger(__name__)
VERSIONS = "featurectl_versions"


class SqliteOnlineSink(OnlineSink):
    """Writes feature rows to the SQLite online store of a Feast repository."""

    def __init__(self, store: FeatureStore) -> None:
        config = store.config
        if config.online_store.type != "sqlite":
            raise ConfigError(
                f"online store type {config.online_store.type!r} is not supported by the stream processor yet",
                "use `type: sqlite` in feature_store.yaml (production stores need a sink in streams/sinks/)",
            )
        path = Path(config.online_store.path)
        self.path = path if path.is_absolute() else Path(config.repo_path or ".") / path
        self.store = store
        self.project = config.project
        self.key_version = config.entity_key_serialization_version
        self.versioning = config.registry.enable_online_feature_view_versioning
        self._pending: list[SinkRow] = []
        self._conn = sqlite3.connect(
            self.path, timeout=30, detect_types=sqlite3.PARSE_DECLTYPES, check_same_thread=False
        )
        # WAL: readers (feast serve, model services) are not blocked while the processor writes.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSIONS} (view TEXT NOT NULL, entity_key BLOB NOT NULL, "
            "version INTEGER NOT NULL, deleted INTEGER NOT NULL, join_keys TEXT NOT NULL, "
            "PRIMARY KEY (view, entity_key))"
        )
        self._conn.commit()

    def add(self, rows: Sequence[SinkRow]) -> None:
        self._pending.extend(rows)

    def discard(self) -> None:
        self._pending.clear()

    def _view(self, name: str) -> FeatureView:
        return self.store.get_feature_view(name)

    def _entity_key(self, view: FeatureView, keys: dict[str, Any]) -> bytes:
        types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        names = sorted(keys)
        values = [python_values_to_proto_values([keys[k]], types[k])[0] for k in names]
        proto = EntityKeyProto(join_keys=names, entity_values=values)
        return serialize_entity_key(proto, entity_key_serialization_version=self.key_version)

    def flush(self) -> list[SinkRow]:
        if not self._pending:
            return []
        # Within a batch only each entity's latest change matters.
        latest: dict[tuple[str, bytes], tuple[SinkRow, FeatureView]] = {}
        views: dict[str, FeatureView] = {}
        for row in self._pending:
            view = views.get(row.view) or views.setdefault(row.view, self._view(row.view))
            ident = (row.view, self._entity_key(view, row.keys))
            held = latest.get(ident)
            if held is None or row.version >= held[0].version:
                latest[ident] = (row, view)
        applied: list[SinkRow] = []
        with self._conn:  # one transaction: all or nothing
            current = self._current_versions(list(latest))
            upserts: dict[str, list[tuple[bytes, SinkRow]]] = {}
            for (view_name, key), (row, view) in latest.items():
                if row.version < current.get((view_name, key), -1):
                    continue  # an older change than the one already applied
                if row.op == DELETE:
                    table = compute_table_id(self.project, view, self.versioning)
                    self._conn.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,))
                else:
                    upserts.setdefault(view_name, []).append((key, row))
                applied.append(row)
            for view_name, items in upserts.items():
                self._upsert(views[view_name], items)
            self._conn.executemany(
                f"INSERT INTO {VERSIONS} (view, entity_key, version, deleted, join_keys) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (view, entity_key) DO UPDATE SET version = excluded.version, deleted = excluded.deleted",
                [
                    (
                        r.view,
                        self._entity_key(views[r.view], r.keys),
                        r.version,
                        int(r.op == DELETE),
                        json.dumps(r.keys, default=str),
                    )
                    for r in applied
                ],
            )
        self._pending.clear()
        return applied

    def _current_versions(self, idents: list[tuple[str, bytes]]) -> dict[tuple[str, bytes], int]:
        out: dict[tuple[str, bytes], int] = {}
        for i in range(0, len(idents), 400):  # SQLite's bound-parameter limit
            chunk = idents[i : i + 400]
            clause = " OR ".join("(view = ? AND entity_key = ?)" for _ in chunk)
            params = [p for ident in chunk for p in ident]
            for view, key, version in self._conn.execute(
                f"SELECT view, entity_key, version FROM {VERSIONS} WHERE {clause}", params
            ):
                out[(view, key)] = version
        return out

    def _upsert(self, view: FeatureView, items: list[tuple[bytes, SinkRow]]) -> None:
        """One statement for all rows of a view; values converted a feature column at a time."""
        table = compute_table_id(self.project, view, self.versioning)
        created_ts = datetime.now(UTC).replace(tzinfo=None)
        params: list[tuple[Any, ...]] = []
        for feature in view.features:
            values = [row.features.get(feature.name) for _, row in items]
            protos = python_values_to_proto_values(values, feature.dtype.to_value_type())
            for (key, row), value, proto in zip(items, values, protos, strict=True):
                event_ts = row.event_time.astimezone(UTC).replace(tzinfo=None)
                params.append(
                    (
                        key,
                        feature.name,
                        proto.SerializeToString(),
                        value if isinstance(value, str) else None,
                        event_ts,
                        created_ts,
                    )
                )
        self._conn.executemany(
            f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
            "created_ts = excluded.created_ts",
            params,
        )

    def live_keys(self, view: str) -> list[dict[str, Any]]:
        """Join keys of every entity of ``view`` currently in the online store."""
        rows = self._conn.execute(f"SELECT join_keys FROM {VERSIONS} WHERE view = ? AND deleted = 0", (view,))
        return [json.loads(j) for (j,) in rows]

    def close(self) -> None:
        self._conn.close()
