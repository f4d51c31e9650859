"""What every online sink writing a Feast store layout shares: views, entity keys, the apply rule and
the flush skeleton.

The flush is one skeleton for every store (``FeastLayoutSink.flush``): fences -> barriers -> stored
versions -> decide -> write (rows, vectors, versions) -> clear below raised barriers, inside the store's
atomic step (``_transaction``). The decisions are the same everywhere and live here: the last change
per entity of a batch, and whether a change applies over the stored version and the view's TRUNCATE
barrier (stores/ordering.py). Each store (stores/<name>/sink.py) supplies the pieces; where its own
guard runs inside the store (the SQL guard, the Lua script) it may still refuse a row the pre-read let
through, and its ``_write`` moves that row to the skipped ones.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from aggregations import rows as aggregation_rows
from aggregations.spec import AggregationView, aggregation_view, is_aggregation_view
from core.errors import FencedError, TransientError
from embeddings.spec import EmbeddingSpec
from stores.keys import fast_entity_key
from stores.ordering import check_not_rewound, epoch_us
from stores.sink import DELETE, OnlineSink, Partition, SinkRow
from stores.transactions import Gate, State
from stores.ttl import ttl_ns
from stores.views import RegistryViews

logger = logging.getLogger(__name__)
Version = tuple[int, int]
FENCED_FIX = (
    "none if it happens after a rebalance; if it repeats, two consumer groups (different "
    "FEATURECTL_PROCESSOR_GROUP) are writing one online store: run one group per store"
)


def _from_us(event_us: int) -> datetime:
    return datetime.fromtimestamp(event_us // 1_000_000, UTC).replace(microsecond=event_us % 1_000_000)


def fenced(lost: list[str], partial: bool = False) -> FencedError:
    """The refusal of a flush whose partitions (``lost``, described) were claimed since its read: of all of
    it, or (``partial``: a store writing a chunk at a time) of what was not written before the claim."""
    done = (
        "Entities written before the claim stay (this copy still owned them)"
        if partial
        else "Nothing of the batch was written or committed"
    )
    return FencedError(
        f"partitions were claimed by another processor since this one read its batch: {'; '.join(lost)}. "
        f"{done}; the partitions' owner re-reads it",
        FENCED_FIX,
    )


def lost_partitions(
    held: Mapping[Partition, int], stored: Iterable[tuple[str, int, int, str, object]]
) -> list[str]:
    """The held partitions whose stored epoch (``stored``: topic, partition, epoch, owner, when claimed or None)
    passed the one held: another processor claimed them since. Described for ``fenced``."""
    return [
        f"{topic}[{partition}] (epoch {epoch} > ours {held[(topic, partition)]}, {owner}"
        + (f", {claimed_at})" if claimed_at is not None else ")")
        for topic, partition, epoch, owner, claimed_at in stored
        if (topic, partition) in held and epoch > held[(topic, partition)]
    ]


def refuse_other_models(spec: EmbeddingSpec, declared: str | None, rows: Iterable[SinkRow]) -> None:
    """TransientError if a row's vector was embedded by another model than the one the store was last applied
    with (``declared``; None: none recorded yet, the spec's is): a `feast apply` this writer has not read."""
    declared = declared or spec.fingerprint
    stale = {r.model for r in rows if r.features.get(spec.field) is not None and r.model != declared}
    if stale:
        raise TransientError(
            f"feature view {spec.view}: rows were embedded with model fingerprint(s) {sorted(map(str, stale))}, "
            f"but {declared} is declared (the model changed with the last feast apply)",
            "nothing to do: the processor re-reads the registry and re-embeds the batch",
        )


NONE: Version = (-1, -1)
# Per (view, entity key): a batch's last change of each entity and its view; the stored version and
# commit time (µs) of each entity.
Latest = dict[tuple[str, bytes], tuple[SinkRow, FeatureView]]
Stored = dict[tuple[str, bytes], tuple[Version, int | None]]


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
        self._aggregations: dict[str, tuple[FeatureView, AggregationView | None]] = {}
        self._held: dict[Partition, int] = {}  # the epochs this writer's flushes must still hold

    def hold(self, epochs: Mapping[Partition, int]) -> None:
        self._held = dict(epochs)

    def _aggregation(self, view: FeatureView) -> AggregationView | None:
        """The aggregations ``view`` declares (its rows are contributions: aggregations/rows.py), or None."""
        held = self._aggregations.get(view.name)
        if held is None or held[0] is not view:
            held = self._aggregations[view.name] = (view, aggregation_view(view))
        return held[1]

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
        """Feast's serialised entity key (what its online stores key rows by); for an aggregation view's
        contribution, its source row's key."""
        if aggregation_rows.ROW in keys and is_aggregation_view(view):
            return aggregation_rows.row_entity_key(keys[aggregation_rows.ROW])
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

    def _latest(self, rows: Sequence[SinkRow]) -> tuple[Latest, dict[str, FeatureView]]:
        """Within a batch only each entity's latest change matters: (view, key) -> (row, view)."""
        latest: Latest = {}
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
        latest: Latest,
        current: Stored,
        barriers: dict[str, Version],
    ) -> Decision:
        """Which rows apply: a row older than the stored version or the view's barrier does not.

        Raises SourceChangedError (stores/ordering.py) for an older row committed clearly later."""
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

    # --- the flush: one skeleton, each store's pieces ------------------------------------------------
    _pending: list[SinkRow]
    _barriers: dict[str, Version]

    def add(self, rows: Sequence[SinkRow]) -> None:
        self._pending.extend(rows)

    def add_barrier(self, view: str, version: Version) -> None:
        self._barriers[view] = max(version, self._barriers.get(view, version))

    def flush(self) -> list[SinkRow]:
        """Write what was added as one atomic step of the store; return the rows that changed state.

        With a transaction gate (stores/transactions.py) the step first records what the batch read of source
        transactions and holds the rows of those not yet complete; the rows it releases are written with the
        rest, in the same step."""
        self.superseded, self.last_skipped = [], []
        gate = self._gate
        if not self._pending and not self._barriers and not (gate is not None and gate.busy):
            self._check_idle()  # nothing online, but a refused batch must not reach the other sinks either
            return []
        if gate is None:
            latest, views = self._latest(self._pending)
            self._check_views(views)
        raised = dict(self._barriers)
        with self._transaction() as tx:
            self._check_fences(tx)
            if gate is not None:
                latest, views = self._latest(gate.step(tx, self._pending))
                self._check_views(views)
            barriers = self._write_barriers(tx, {view for view, _ in latest} | set(raised))
            current = self._current_versions(tx, sorted(latest))
            decision = self._decide(latest, current, barriers)
            self._write(tx, decision, views, latest, current)
            for view_name in sorted(raised):
                view = views.get(view_name) or self._view(view_name)
                self._clear_below_barrier(tx, view, barriers.get(view_name, raised[view_name]))
        self._pending.clear()
        self._barriers.clear()
        self.superseded = decision.superseded
        self._log_skipped(decision.skipped)
        return decision.applied

    _gate: Gate | None = None  # set by a store that keeps source transactions atomic

    def limit_transactions(self, enabled: bool, max_rows: int, max_wait_s: float) -> None:
        """Whether to hold source transactions, and the bounds (settings atomic_transactions, txn_max_rows,
        txn_max_wait_s). Off: every row is visible as written, as before stores/transactions.py."""
        if self._gate is not None:
            self._gate.max_rows, self._gate.max_wait_s = max_rows, max_wait_s
        if not enabled:
            self._gate = None

    @property
    def keeps_transactions(self) -> bool:
        return self._gate is not None

    @property
    def transactions_waiting(self) -> bool:
        return self._gate is not None and self._gate.waiting

    def transaction_state(self) -> State | None:
        """The rule's state in the store (``featurectl health``), None where the store keeps no such rule."""
        return None

    def accept_gap(self, position: int) -> None:
        if self._gate is not None:
            self._gate.accept_gap(position)

    def add_seen(self, txn: str, order: int, version: int) -> None:
        if self._gate is not None:
            self._gate.add_seen(txn, order, version)

    def add_end(self, txn: str, events: int, position: int) -> None:
        if self._gate is not None:
            self._gate.add_end(txn, events, position)

    def _check_idle(self) -> None:
        """An empty flush: refuse it (FencedError) if a held partition was claimed since."""
        with self._transaction() as tx:
            self._check_fences(tx)

    def _check_views(self, views: dict[str, FeatureView]) -> None:
        """Refuse views this store cannot hold (ConfigError), before anything is written."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """The store's atomic step, yielding what the pieces below write through; all or nothing where
        the store has transactions. A retryable conflict is raised as TransientError."""

    @abstractmethod
    def _check_fences(self, tx: Any) -> None:
        """Raise FencedError (nothing written) if a held partition was claimed since (streams/fencing.py)."""

    @abstractmethod
    def _write_barriers(self, tx: Any, views: set[str]) -> dict[str, Version]:
        """Store the pending TRUNCATE barriers (never lowering one); return those of ``views``."""

    @abstractmethod
    def _current_versions(self, tx: Any, idents: list[tuple[str, bytes]]) -> Stored:
        """Stored (version, commit time in µs) per (view, entity key)."""

    @abstractmethod
    def _write(
        self,
        tx: Any,
        decision: Decision,
        views: dict[str, FeatureView],
        latest: Latest,
        current: Stored,
    ) -> None:
        """Write the decision: deletes, upserts, vectors and versions. A row the store's own guard refuses
        moves from ``decision.applied`` to ``decision.skipped``."""

    def _clear_below_barrier(self, tx: Any, view: FeatureView, barrier: Version) -> None:
        """A TRUNCATE raised in this flush: delete every entity of ``view`` stored below ``barrier``, any
        writer's. Optional: a store whose rows of ``view`` all come through this flush needs nothing."""

    def stored_stamps(
        self, view: str, keys: Sequence[dict[str, Any]]
    ) -> list[tuple[Version, int | None] | None]:
        """Each entity's stored (version, commit time in µs), a deleted one's too (its tombstone), or None if
        the store has none. This default reads outside a transaction (Redis, Milvus); a store whose reads need
        one overrides it."""
        feature_view = self._view(view)
        idents = [(view, self._entity_key(feature_view, k)) for k in keys]
        current = self._current_versions(None, idents)
        return [current.get(i) for i in idents]

    def stored_orders(self, view: str, keys: Sequence[dict[str, Any]]) -> list[Version | None]:
        """Each entity's stored version (stores/ordering.py), or None if the store has none."""
        return [stamp[0] if stamp else None for stamp in self.stored_stamps(view, keys)]

    @abstractmethod
    def _live_before(self, view: str, cutoff_us: int) -> list[tuple[dict[str, Any], Version, int]]:
        """The entities ``view`` holds (not deleted) whose stored change was committed before ``cutoff_us``:
        (join keys, stored version, commit time in µs) each."""

    def expire(self, view: FeatureView, now_ns: int, chunk: int = 10_000) -> int:
        """Remove ``view``'s values past its ttl at ``now_ns`` (the read rule of stores/ttl.py: older than ttl,
        exactly ttl old stays); returns how many entities it removed. 0 for a view without ttl.

        Each removal is a delete at the entity's stored version, through the flush: the version guard makes it
        safe beside a processor (a change stored meanwhile is newer and wins; the delete is then skipped),
        and the tombstone keeps the version, so a re-delivered older change is still refused."""
        limit = ttl_ns(view)
        if not limit or is_aggregation_view(view):  # an aggregate's windows are its own expiry
            return 0
        cutoff_us = -(-(now_ns - limit) // 1000)  # event_us * 1000 < now - ttl  <=>  event_us < ceil(...)
        stale = self._live_before(view.name, cutoff_us)
        removed = 0
        for start in range(0, len(stale), chunk):
            self.add(
                [
                    SinkRow(view.name, DELETE, keys, {}, _from_us(event_us), version, "d", "ttl", None, minor)
                    for keys, (version, minor), event_us in stale[start : start + chunk]
                ]
            )
            removed += len(self.flush())
        return removed

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
