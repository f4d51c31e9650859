"""The feature server's lookup path: plain ``/get-online-features`` requests answered without Feast's request
machinery, with Feast's answer.

Feast's server spends most of a lookup outside the store: pydantic parses the body, the registry is searched
and the views regrouped per request (feast-dev/feast#3649, #3440), entity values become protos, the response is
built as protos, then converted to a dict and encoded with ``json``; the read itself goes through a thread
pool. Here a request whose shape is the common one (``features``, ``entities``, optional
``full_feature_names``; every join key the views need and nothing else; key values of the entity's type) is
answered from a **plan** cached per request shape and registry (the views, their features, join keys, key
types, ttl, resolved once by Feast's own functions), one ``online_read`` per view on the store's own plugin
(the same read Feast makes, so the same values), and the response built directly as the dict Feast's server
returns (Feast's own value and timestamp converters), encoded by msgspec.

A request may name a ``feature_service`` instead of ``features`` (Feast's order: a service's projections, with their
aliases and join key maps): its plan carries the service, for authorization (Feast checks the service, not its
views) and for logging what was served (serving/served_log.py) when the service has a ``logging_config``.

Anything else (another field, an on-demand view, an unknown feature, a missing or extra
key, a value of another type, malformed JSON) returns None, and Feast's own app answers it: its statuses and
error bodies stay Feast's. A view's ttl applies as on every read of ours (stores/ttl.py). One difference is
by design: Feast orders a view's features by a Python ``set`` (its order changes with the process's hash
seed, so between two Feast servers too); here they come in the order requested. Clients match columns by
``metadata.feature_names``, as they must with Feast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
from feast import FeatureService, FeatureStore, FeatureView
from feast.feature_server_utils import _timestamp_to_str, _value_to_native
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from stores import contributions, ordering, ttl
from stores.keys import key_encoder

logger = logging.getLogger(__name__)

PLAIN_FIELDS = frozenset({"features", "feature_service", "entities", "full_feature_names"})
EPOCH = "1970-01-01T00:00:00Z"  # Feast's timestamp for an entity column and a value not found
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
# Entity value types a plain request may carry: the ValueProto field, the JSON type, the range.
_KEY_TYPES: dict[ValueType, tuple[str, type, tuple[int, int] | None]] = {
    ValueType.INT64: ("int64_val", int, _INT64),
    ValueType.INT32: ("int32_val", int, _INT32),
    ValueType.STRING: ("string_val", str, None),
}
# Stored values' native forms kept per server process (Lookups._native): the small ones only (numbers, short
# strings: what repeats), so the cache's size stays bounded by entries x this.
NATIVE_BLOB_MAX = 256
NATIVE_ENTRIES_MAX = 100_000
_IMMUTABLE = (int, float, str, bool, type(None))
_UNSEEN = object()
SNAPSHOT_S = 1.0  # how long a request's views are read again while releases keep moving under them


class ReadsMovedError(RuntimeError):
    """Releases of source transactions kept landing between the reads of one request's views (``Lookups._read_all``)."""


_decode = msgspec.json.Decoder().decode
encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ViewRead:
    """One view's part of a plan: what to read and how to name it."""

    view: FeatureView
    features: tuple[str, ...]  # the view's requested features, in request order
    names: tuple[str, ...]  # their output names (``view__feature`` with full_feature_names)
    keys: tuple[int, ...]  # positions in the plan's keys of the view's join keys, in its entity-column order
    join_keys: tuple[str, ...]
    fields: tuple[str, ...]  # ValueProto field of each join key
    types: dict[str, ValueType]  # each join key's value type
    ttl_ns: int
    prefix: str = ""  # the view's name in references (its projection's alias, if any)
    encode_key: Callable[[Sequence[Any]], bytes | None] | None = None  # Feast's key bytes (stores/keys.py)


@dataclass(frozen=True, slots=True)
class Plan:
    """How to answer one request shape: its entity keys (request order) with their JSON type and range, and
    the views to read; the feature service it names, if any, and then the names its log gives the response's
    columns (``logged``, serving/served_log.py); under authorization, whether each user seen may read it
    (serving/fast_auth.py)."""

    keys: tuple[str, ...]
    types: tuple[tuple[type, tuple[int, int] | None], ...]
    reads: tuple[ViewRead, ...]
    service: FeatureService | None = None
    logged: bytes | None = None
    log_rate: float = 0.0  # the service's ``logging_config.sample_rate``
    decisions: dict[tuple[Any, ...], bool] = field(default_factory=dict, compare=False, repr=False)


def make_plan(
    store: FeatureStore, requested: Sequence[str] | str, full_names: bool, keys: Sequence[str]
) -> Plan | None:
    """The plan for a request shape (``requested``: feature references, or a feature service's name), or None
    when Feast must answer it (see the module docstring). Feast's own functions resolve the references, so what
    they refuse is refused by Feast's app in its words."""
    from feast import utils
    from feast.feature_view import DUMMY_ENTITY_NAME

    service: FeatureService | None = None
    try:
        if isinstance(requested, str):
            service = store.registry.get_feature_service(requested, store.project, allow_cache=True)
            features = utils._get_features(store.registry, store.project, service, allow_cache=True)
        else:
            features = list(requested)
        views, on_demand = utils._get_feature_views_to_use(
            store.registry,
            store.project,
            service if service is not None else features,
            allow_cache=True,
            hide_dummy_entity=False,
        )
        grouped, on_demand_refs = utils._group_feature_refs(features, views, on_demand)
    except Exception:  # Feast's app answers it, with its own error
        return None
    if on_demand or on_demand_refs or len(set(features)) != len(features):
        return None
    wanted: dict[str, list[str]] = {}
    for ref in features:
        view_name, _, feature = ref.partition(":")
        wanted.setdefault(view_name, []).append(feature)
    position = {k: i for i, k in enumerate(keys)}
    key_types: dict[str, ValueType] = {}
    reads = []
    for view, names in grouped:
        if type(view) is not FeatureView or getattr(view.projection, "version_tag", None) is not None:
            return None
        if any(e == DUMMY_ENTITY_NAME for e in view.entities) or not view.entity_columns:
            return None
        prefix: str = view.projection.name_to_use()  # type: ignore[no-untyped-call]
        ordered = [f for f in wanted.get(prefix, []) if f in names]
        if sorted(ordered) != sorted(names):
            return None
        join_map = view.projection.join_key_map or {}
        join_keys, fields = [], []
        for column in view.entity_columns:
            join_key = join_map.get(column.name, column.name)
            value_type = column.dtype.to_value_type()
            if join_key not in position or value_type not in _KEY_TYPES:
                return None
            if key_types.setdefault(join_key, value_type) != value_type:
                return None
            join_keys.append(join_key)
            fields.append(_KEY_TYPES[value_type][0])
        reads.append(
            ViewRead(
                view,
                tuple(ordered),
                tuple(f"{prefix}__{f}" if full_names else f for f in ordered),
                tuple(position[k] for k in join_keys),
                tuple(join_keys),
                tuple(fields),
                {k: key_types[k] for k in join_keys},
                ttl.ttl_ns(view),
                prefix,
                key_encoder(join_keys, {k: key_types[k] for k in join_keys}),
            )
        )
    if set(key_types) != set(keys):  # a key no view reads: Feast's rules for it are its own
        return None
    types = tuple((_KEY_TYPES[key_types[k]][1], _KEY_TYPES[key_types[k]][2]) for k in keys)
    logged, rate = None, 0.0
    if service is not None and service.logging_config is not None:
        # The response's columns as the service's log names them: join keys, then ``<view>__<feature>``.
        columns = [*keys] + [f"{read.prefix}__{f}" for read in reads for f in read.features]
        logged = encode({"service": service.name, "keys": len(keys), "columns": columns})
        rate = float(service.logging_config.sample_rate)
    return Plan(tuple(keys), types, tuple(reads), service, logged, rate)


class Lookups:
    """Answers plain requests over one FeatureStore (one per server process); plans are cached per request shape
    and dropped when the registry the store holds is replaced (Feast's app refreshes it every
    ``registry_ttl_sec``)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._plans: dict[tuple[Any, ...], Plan | None] = {}
        self._registry: object = None
        self._stamps: dict[datetime, tuple[str, int]] = {}
        self._natives: dict[bytes, Any] = {}
        self.rereads = 0  # requests' views read again because a release landed between them (_read_all)

    def _plan(self, features: tuple[str, ...] | str, full_names: bool, keys: tuple[str, ...]) -> Plan | None:
        registry = getattr(self.store.registry, "cached_registry_proto", None)
        if registry is not self._registry:
            self._plans.clear()
            self._registry = registry
        shape = (features, full_names, keys)
        if shape not in self._plans:
            if len(self._plans) > 10_000:  # request shapes come from clients: keep the cache bounded
                self._plans.clear()
            self._plans[shape] = make_plan(self.store, features, full_names, keys)
        return self._plans[shape]

    def answer(
        self, body: bytes, permits: Callable[[Plan], bool] | None = None
    ) -> tuple[bytes, Plan, int, int, int] | None:
        """The JSON body Feast's server would return for ``body``, with the plan that answered it, the request's
        entity rows and features (for Feast's request metrics) and the instant it is as of (ns since the epoch:
        the served log's request time, ``_read_all``); or None if Feast's app must answer it (also when
        ``permits``, the caller's authorization, refuses the plan)."""
        try:
            request = _decode(body)
        except msgspec.DecodeError:
            return None
        if type(request) is not dict or not request.keys() <= PLAIN_FIELDS:
            return None
        features, entities = request.get("features"), request.get("entities")
        full_names = request.get("full_feature_names", False)
        service = request.get("feature_service")
        if service is not None:
            # Feast ignores ``features`` beside a service; a request with both is left to it.
            if type(service) is not str or features not in (None, []):
                return None
            requested: tuple[str, ...] | str = service
        elif type(features) is not list or not features or any(type(f) is not str for f in features):
            return None
        else:
            requested = tuple(features)
        if type(entities) is not dict or not entities or type(full_names) is not bool:
            return None
        plan = self._plan(requested, full_names, tuple(entities))
        if plan is None or (permits is not None and not permits(plan)):
            return None
        columns = [entities[k] for k in plan.keys]
        rows = len(columns[0]) if type(columns[0]) is list else 0
        if not rows:
            return None
        for column, (kind, bounds) in zip(columns, plan.types, strict=True):
            if type(column) is not list or len(column) != rows:
                return None
            for value in column:
                if type(value) is not kind or (
                    bounds is not None and not bounds[0] <= cast(int, value) <= bounds[1]
                ):
                    return None
        count = sum(len(read.features) for read in plan.reads)
        response, at_ns = self._response(plan, columns, rows)
        return encode(response), plan, rows, count, at_ns

    def _response(self, plan: Plan, columns: list[list[Any]], rows: int) -> tuple[dict[str, Any], int]:
        """Feast's response body, and the instant (ns since the epoch, whole µs) it is as of."""
        names = list(plan.keys)
        results: list[dict[str, Any]] = [
            {"values": column, "statuses": ["PRESENT"] * rows, "event_timestamps": [EPOCH] * rows}
            for column in columns
        ]
        provider = self.store._get_provider()
        online, config = provider.online_store, self.store.config
        uniques: list[dict[tuple[Any, ...], list[int]]] = []
        for read in plan.reads:
            unique: dict[tuple[Any, ...], list[int]] = {}
            if len(read.keys) == 1:
                for row, value in enumerate(columns[read.keys[0]]):
                    unique.setdefault((value,), []).append(row)
            else:
                for row, value in enumerate(zip(*(columns[i] for i in read.keys), strict=True)):
                    unique.setdefault(value, []).append(row)
            uniques.append(unique)
        founds, now = self._read_all(online, config, plan, uniques)
        for read, unique, found in zip(plan.reads, uniques, founds, strict=True):
            n = len(read.features)
            values: list[list[Any]] = [[None] * rows for _ in range(n)]
            statuses = [["NOT_FOUND"] * rows for _ in range(n)]
            stamps = [EPOCH] * rows
            index = {f: i for i, f in enumerate(read.features)}
            for (event_time, data), destinations in zip(found, unique.values(), strict=True):
                stamp, stamp_ns = self._stamp(event_time)
                for row in destinations:
                    stamps[row] = stamp
                if not data:
                    continue
                expired = read.ttl_ns and stamp_ns and now - stamp_ns > read.ttl_ns
                status = "OUTSIDE_MAX_AGE" if expired else "PRESENT"
                for feature, value in data.items():
                    i = index.get(feature)
                    if i is None:
                        continue
                    if expired:
                        native = None
                    elif isinstance(value, bytes):
                        native = self._native(value)
                    else:
                        native = _value_to_native(value)
                    for row in destinations:
                        values[i][row] = native
                        statuses[i][row] = status
            names += read.names
            for i in range(n):
                results.append(
                    {"values": values[i], "statuses": statuses[i], "event_timestamps": list(stamps)}
                )
        return {"results": results, "metadata": {"feature_names": names}}, now

    def _read_all(
        self, online: Any, config: Any, plan: Plan, uniques: list[dict[tuple[Any, ...], list[int]]]
    ) -> tuple[list[list[tuple[datetime | None, dict[str, ValueProto | bytes] | None]]], int]:
        """Each view's rows, all as of one state of the store as far as source transactions go: the processor
        releases a transaction's rows of every view in one atomic step (stores/transactions.py), but each view is
        a read of its own, so a release between two of them would show a state the source never had (an order
        newer than its customer's totals). The store's release position is read before and after the reads; if
        it moved, they are read again, until it stays put (a release every ~100 ms at most, a read of a few ms:
        rarely more than once) or past SNAPSHOT_S (ReadsMovedError: better no answer than a wrong one).

        Also the instant the rows are as of, taken before each attempt's reads: ttl is judged at it, aggregation
        windows end at it (``contributions.reading_at``), and the served log records it as the request's time, so
        `featurectl consistency` recomputes the lookup as of the very instant it was answered for."""

        def read_views() -> tuple[
            list[list[tuple[datetime | None, dict[str, ValueProto | bytes] | None]]], int
        ]:
            at_ns = ttl.clock() // 1000 * 1000  # whole µs: what a datetime and the log's timestamps hold
            with contributions.reading_at(ordering.EPOCH + timedelta(microseconds=at_ns // 1000)):
                reads = [
                    self._read(online, config, r, list(u)) for r, u in zip(plan.reads, uniques, strict=True)
                ]
            return reads, at_ns

        position: Callable[[Any], int | None] | None = getattr(online, "release_position", None)
        if position is None or len(plan.reads) < 2:  # one view is one read (a statement, a MULTI/EXEC)
            return read_views()
        before = position(config)
        if before is None:  # a store that cannot tell
            return read_views()
        deadline = time.monotonic() + SNAPSHOT_S
        while True:
            founds = read_views()
            after = position(config)
            if after == before:
                return founds
            self.rereads += 1
            if time.monotonic() > deadline:
                raise ReadsMovedError(
                    f"the online store released source transactions during every read of this request's "
                    f"{len(plan.reads)} views for {SNAPSHOT_S:.0f} s; retry it"
                )
            before = after

    def _read(
        self, online: Any, config: Any, read: ViewRead, keys: list[tuple[Any, ...]]
    ) -> list[tuple[datetime | None, dict[str, ValueProto | bytes] | None]]:
        """The store's rows for ``keys`` (unique), as its ``online_read`` returns them: by serialised key where
        the store reads that way (``read_serialized``: values as their stored bytes), else through ``online_read``
        with Feast's protos."""
        by_bytes = getattr(online, "read_serialized", None)
        if (
            by_bytes is not None
            and read.encode_key is not None
            and config.entity_key_serialization_version == 3
        ):
            serialised = [read.encode_key(key) for key in keys]
            if all(k is not None for k in serialised):
                rows = by_bytes(config, read.view, serialised, list(read.features))
                if rows is not None:
                    return rows  # type: ignore[no-any-return]
        protos = [
            EntityKeyProto(
                join_keys=read.join_keys,
                entity_values=[ValueProto(**{f: v}) for f, v in zip(read.fields, key, strict=True)],
            )
            for key in keys
        ]
        # A fresh list: Feast's Redis store appends to the one it is given.
        return online.online_read(config, read.view, protos, list(read.features))  # type: ignore[no-any-return]

    def _native(self, blob: bytes) -> Any:
        """Feast's JSON form of a stored value (serialised ValueProto bytes, as ``read_serialized`` returns them).
        A value is a pure function of its bytes, so a small immutable one is converted once per process: on a
        100-entity lookup, parsing and converting its 300 values was a third of the server's time."""
        native = self._natives.get(blob, _UNSEEN)
        if native is not _UNSEEN:
            return native
        native = _value_to_native(ValueProto.FromString(blob))
        if len(blob) <= NATIVE_BLOB_MAX and type(native) in _IMMUTABLE:  # lists and dicts are built each time
            if len(self._natives) >= NATIVE_ENTRIES_MAX:
                self._natives.clear()
            self._natives[blob] = native
        return native

    def _stamp(self, event_time: datetime | None) -> tuple[str, int]:
        """Feast's JSON form of a row's event time (through a Timestamp, as Feast converts it) and its ns."""
        if event_time is None:
            return EPOCH, 0
        held = self._stamps.get(event_time)
        if held is None:
            if len(self._stamps) > 100_000:
                self._stamps.clear()
            proto = Timestamp()
            proto.FromDatetime(event_time)
            held = self._stamps[event_time] = (
                _timestamp_to_str(proto),
                proto.seconds * 1_000_000_000 + proto.nanos,
            )
        return held
