"""What every online sink writing a Feast store layout shares: views, entity keys and the apply rule.

Each store's sink (SQLite, Postgres) does its own atomic transaction; the decisions inside it are
the same everywhere and live here: the last change per entity of a batch, and whether a change
applies over the stored version and the view's TRUNCATE barrier (streams/ordering.py).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from featurectl.errors import FencedError
from onlinestore.keys import fast_entity_key
from streams.ordering import check_not_rewound, epoch_us
from streams.sinks.base import DELETE, OnlineSink, SinkRow
from streams.store import RegistryViews

logger = logging.getLogger(__name__)
Version = tuple[int, int]
FENCED_FIX = (
    "none if it happens after a rebalance; if it repeats, two consumer groups (different "
    "FEATURECTL_PROCESSOR_GROUP) are writing one online store: run one group per store"
)


def fenced(lost: list[str]) -> FencedError:
    """The refusal of a whole flush whose partitions (``lost``, described) were claimed since its read."""
    return FencedError(
        f"partitions were claimed by another processor since this one read its batch: {'; '.join(lost)}. "
        "Nothing of the batch was written or committed; the partitions' owner re-reads it",
        FENCED_FIX,
    )


NONE: Version = (-1, -1)


@dataclass
class Decision:
    """One flush's verdicts: rows to write (upserts by view, deletes by view) and rows skipped."""

    applied: list[SinkRow] = field(default_factory=list)
    skipped: list[SinkRow] = field(default_factory=list)
    superseded: list[SinkRow] = field(default_factory=list)
    upserts: dict[str, list[tuple[bytes, SinkRow]]] = field(default_factory=dict)
    deletes: dict[str, list[bytes]] = field(default_factory=dict)


class FeastLayoutSink(OnlineSink):
    """Base of the online sinks: the feature views, Feast's entity keys, and the apply rule."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.project = store.config.project
        self.key_version = store.config.entity_key_serialization_version
        self.versioning = store.config.registry.enable_online_feature_view_versioning
        self.superseded: list[SinkRow] = []
        self._views: dict[str, FeatureView] = {}  # last good declarations (streams/faults.py)
        self._registry = RegistryViews(store)
        # Per view: the declaration the entity key types were taken from, and those types.
        self._key_types: dict[str, tuple[FeatureView, dict[str, ValueType]]] = {}

    def _view(self, name: str) -> FeatureView:
        """The view from the (cached) registry; the last good copy if a registry read fails."""
        try:
            # The registry as of its last refresh, not a per-batch registry file read and parse.
            view = self._registry.get(name)
        except Exception:
            if name not in self._views:
                raise
            logger.warning(
                "registry read for %s failed; using the last good declaration", name, exc_info=True
            )
            return self._views[name]
        self._views[name] = view
        return view

    def _entity_key(self, view: FeatureView, keys: dict[str, Any]) -> bytes:
        """Feast's serialised entity key (what its online stores key rows by)."""
        cached = self._key_types.get(view.name)
        if cached is None or cached[0] is not view:
            cached = (view, {c.name: c.dtype.to_value_type() for c in view.entity_columns})
            self._key_types[view.name] = cached
        types = cached[1]
        if self.key_version == 3:
            fast = fast_entity_key(keys, types)
            if fast is not None:
                return fast
        names = sorted(keys)
        values = [python_values_to_proto_values([keys[k]], types[k])[0] for k in names]
        proto = EntityKeyProto(join_keys=names, entity_values=values)
        return serialize_entity_key(proto, entity_key_serialization_version=self.key_version)

    def _latest(
        self, rows: Sequence[SinkRow]
    ) -> tuple[dict[tuple[str, bytes], tuple[SinkRow, FeatureView]], dict[str, FeatureView]]:
        """Within a batch only each entity's latest change matters: (view, key) -> (row, view)."""
        latest: dict[tuple[str, bytes], tuple[SinkRow, FeatureView]] = {}
        views: dict[str, FeatureView] = {}
        for row in rows:
            view = views.get(row.view) or views.setdefault(row.view, self._view(row.view))
            ident = (row.view, self._entity_key(view, row.keys))
            held = latest.get(ident)
            if held is None or row.order >= held[0].order:
                latest[ident] = (row, view)
        return latest, views

    @staticmethod
    def _decide(
        latest: dict[tuple[str, bytes], tuple[SinkRow, FeatureView]],
        current: dict[tuple[str, bytes], tuple[Version, int | None]],
        barriers: dict[str, Version],
    ) -> Decision:
        """Which rows apply: a row older than the stored version or the view's barrier does not.

        Raises SourceChangedError (streams/ordering.py) for an older row committed clearly later."""
        out = Decision()
        for (view_name, key), (row, _) in latest.items():
            stored, stored_us = current.get((view_name, key), (NONE, None))
            if row.order < max(stored, barriers.get(view_name, NONE)):
                if row.order < stored and stored_us is not None:
                    check_not_rewound(row, stored, stored_us)
                    if stored_us == epoch_us(row.event_time):
                        out.superseded.append(row)
                out.skipped.append(row)  # an older change than the one already applied
                continue
            if row.op == DELETE:
                out.deletes.setdefault(view_name, []).append(key)
            else:
                out.upserts.setdefault(view_name, []).append((key, row))
            out.applied.append(row)
        return out

    @abstractmethod
    def stored_orders(self, view: str, keys: Sequence[dict[str, Any]]) -> list[Version | None]:
        """Each entity's stored version (streams/ordering.py), or None if the store has none."""

    @abstractmethod
    def reset(self) -> int:
        """Empty the online store: every view's rows and vectors, the versions and the barriers.

        For a source that was replaced (SourceChangedError); the tables stay, so readers keep working
        and see every entity as absent until the processor and a snapshot fill them again. Returns the
        number of entities the store held."""

    def _log_skipped(self, skipped: list[SinkRow]) -> None:
        self.last_skipped = skipped
        if skipped:
            self.skipped_older += len(skipped)
            logger.info(
                "%d row(s) older than what the online store holds were skipped, e.g. %s %s version %s",
                len(skipped),
                skipped[0].view,
                skipped[0].source,
                skipped[0].order,
            )
