"""Feast's Redis online store as a sink: Feast's layout, the version guard and deletes atomic per entity.

Feast keeps one hash per entity key (serialised key + project), shared by every view of that entity:
``mmh3("<view>:<feature>")`` -> ValueProto bytes and ``_ts:<view>`` -> the event time. Feast's own
write reads ``_ts`` and then writes (not atomic) and never deletes. Here one Lua script per entity
(atomic in Redis) checks, then writes, touching only its own view's fields:

- the writer's partition fences (``featurectl:<project>:fences``, streams/fencing.py): a claim since
  the batch was read refuses the write;
- the view's TRUNCATE barrier (``featurectl:<project>:barriers``);
- the entity's stored version, ``_ver:<view>`` in the entity's own hash (``version:minor:event_us:deleted``,
  kept after a delete: the tombstone); an older change is refused;
- then HSET of the view's fields (and ``_jk:<view>``, its join keys) or, for a delete, HDEL of them.

Atomicity is per entity, not per batch: a flush refused by a fence part way has written the earlier
entities while this writer still owned their partitions, and the new owner re-applies the batch from
the committed offset (versions make that idempotent). Versions are compared as Lua numbers (doubles):
exact below 2**53, i.e. for WAL positions up to 8 PiB. Vector features are refused: Feast's Redis store
has no vector search.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import ConfigError, FencedError
from embeddings.spec import EmbeddingSpec, spec_for
from stores.feast_layout import FENCED_FIX, Decision, FeastLayoutSink, Latest, Stored, Version
from stores.ordering import epoch_us
from stores.redis import KIND
from stores.redis.feast import TYPE as REDIS_TYPE
from stores.registry import vector_types
from stores.sink import DELETE, Partition, SinkRow, StoredVector
from stores.values import value_bytes

logger = logging.getLogger(__name__)

# KEYS: entity hash, fences, barriers, live set of the view, known set of the view.
# ARGV: view, version, minor, event_us, op, join keys, n fences, n x (field, epoch), n deletes,
#       n x field to delete, then field/value pairs to set.
APPLY = """
local function lt(v1, m1, v2, m2) return v1 < v2 or (v1 == v2 and m1 < m2) end
local view, v, m = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 8
for _ = 1, tonumber(ARGV[7]) do
  local cur = redis.call('HGET', KEYS[2], ARGV[i])
  if cur and tonumber(cur) > tonumber(ARGV[i + 1]) then return {'fenced', ARGV[i], cur} end
  i = i + 2
end
local b = redis.call('HGET', KEYS[3], view)
if b then
  local bv, bm = string.match(b, '^(-?%d+):(-?%d+)')
  if lt(v, m, tonumber(bv), tonumber(bm)) then return {'barrier', b} end
end
local s = redis.call('HGET', KEYS[1], '_ver:' .. view)
if s then
  local sv, sm = string.match(s, '^(-?%d+):(-?%d+)')
  if lt(v, m, tonumber(sv), tonumber(sm)) then return {'older', s} end
end
local ndel = tonumber(ARGV[i]); i = i + 1
local ver = ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4]
if ARGV[5] == 'd' then
  for j = i, i + ndel - 1 do redis.call('HDEL', KEYS[1], ARGV[j]) end
  redis.call('HSET', KEYS[1], '_ver:' .. view, ver .. ':1')
  redis.call('SREM', KEYS[4], KEYS[1])
else
  local fields = {'_ver:' .. view, ver .. ':0', '_jk:' .. view, ARGV[6]}
  for j = i + ndel, #ARGV do fields[#fields + 1] = ARGV[j] end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('SADD', KEYS[4], KEYS[1])
end
redis.call('SADD', KEYS[5], KEYS[1])
return {'ok'}
"""


def _parse_version(raw: bytes | str | None) -> tuple[Version, int | None, bool] | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    version, minor, event_us, deleted = text.split(":")
    return (int(version), int(minor)), int(event_us), deleted == "1"


class RedisOnlineSink(FeastLayoutSink):
    """Writes feature rows into Feast's Redis layout, guarded per entity by a Lua script."""

    def __init__(self, store: FeatureStore) -> None:
        super().__init__(store)
        config = store.config.online_store
        if config.type not in KIND.types:
            raise ConfigError(f"online store type {config.type!r} is not Redis", f"use `type: {REDIS_TYPE}`")
        if str(getattr(config.redis_type, "value", config.redis_type)) != "redis":
            raise ConfigError(
                f"redis_type {config.redis_type} is not supported by the stream processor's sink yet",
                "use redis_type: redis (one server or a primary with replicas); cluster support needs "
                "hash-tagged bookkeeping keys",
            )
        self._client = RedisOnlineStore()._get_client(config)
        self._apply = self._client.register_script(APPLY)
        self._pending: list[SinkRow] = []
        self._barriers: dict[str, Version] = {}
        self._held: dict[Partition, int] = {}
        prefix = f"featurectl:{self.project}"
        self._fences, self._owners, self._barrier_key = (
            f"{prefix}:fences",
            f"{prefix}:fence_owners",
            f"{prefix}:barriers",
        )
        self._prefix = prefix
        self._fields: dict[str, tuple[FeatureView, dict[str, bytes]]] = {}

    # --- keys and fields ------------------------------------------------------------------------
    def _hash_key(self, view: FeatureView, keys: dict[str, Any]) -> bytes:
        return self._entity_key(view, keys) + self.project.encode()

    def _feature_fields(self, view: FeatureView) -> dict[str, bytes]:
        """feature name -> Feast's hash field for it (``mmh3("<view>:<feature>")``), per declaration."""
        held = self._fields.get(view.name)
        if held is None or held[0] is not view:
            held = (view, {f.name: _mmh3(f"{view.name}:{f.name}") for f in view.features})
            self._fields[view.name] = held
        return held[1]

    def _check_vectors(self, view: FeatureView) -> None:
        if spec_for(view) is not None or any(f.vector_index for f in view.features):
            raise ConfigError(
                f"feature view {view.name} has vector features, and Feast's Redis online store has no vector search",
                f"keep the view on an online store that indexes vectors: {vector_types()}",
            )

    # --- buffering and fencing ------------------------------------------------------------------
    def discard(self) -> None:
        self._pending.clear()
        self._barriers.clear()

    def claim(self, partitions: Sequence[Partition], owner: str) -> dict[Partition, int]:
        with self._client.pipeline(transaction=True) as pipe:
            for topic, partition in partitions:
                pipe.hincrby(self._fences, f"{topic}|{partition}", 1)
                pipe.hset(self._owners, f"{topic}|{partition}", owner)
            replies = pipe.execute()
        return {p: int(replies[2 * i]) for i, p in enumerate(partitions)}

    def hold(self, epochs: Mapping[Partition, int]) -> None:
        self._held = dict(epochs)

    def _fence_args(self) -> list[Any]:
        args: list[Any] = [len(self._held)]
        for (topic, partition), epoch in sorted(self._held.items()):
            args += [f"{topic}|{partition}", epoch]
        return args

    def _refuse(self, field: str, epoch: bytes) -> FencedError:
        topic, partition = field.rsplit("|", 1)
        raw = self._client.hget(self._owners, field)
        owner = raw.decode() if raw else "?"
        return FencedError(
            f"partitions were claimed by another processor since this one read its batch: {topic}[{partition}] "
            f"(epoch {int(epoch)} > ours {self._held.get((topic, int(partition)))}, {owner}). Entities "
            "written before the claim stay (this copy still owned them); the partitions' owner re-reads the batch",
            FENCED_FIX,
        )

    def _check_fences(self, tx: Any = None) -> None:
        if not self._held:
            return
        fields = [f"{t}|{p}" for t, p in sorted(self._held)]
        for field, epoch in zip(fields, self._client.hmget(self._fences, fields), strict=True):
            topic, partition = field.rsplit("|", 1)
            if epoch is not None and int(epoch) > self._held[(topic, int(partition))]:
                raise self._refuse(field, epoch)

    # --- the write ------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # Redis has no transaction over reads and writes here: the Lua script is the atomic step, one
        # entity at a time, and checks the fences and the version guard again itself.
        yield None

    def _check_views(self, views: dict[str, FeatureView]) -> None:
        for view in views.values():
            self._check_vectors(view)

    def _write(
        self,
        tx: Any,
        decision: Decision,
        views: dict[str, FeatureView],
        latest: Latest,
        current: Stored,
    ) -> None:
        fence_args = self._fence_args()
        encoded = self._encode(views, decision.applied)
        with self._client.pipeline(transaction=False) as pipe:
            for row in decision.applied:
                self._call(pipe, views[row.view], row, fence_args, encoded.get(id(row)))
            replies = pipe.execute() if decision.applied else []
        applied: list[SinkRow] = []
        fenced: FencedError | None = None
        for row, reply in zip(decision.applied, replies, strict=True):
            verdict = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            if verdict == "ok":
                applied.append(row)
            elif verdict == "fenced":
                fenced = fenced or self._refuse(reply[1].decode(), reply[2])
            else:  # another writer stored a newer version (or a barrier) since the pre-read
                decision.skipped.append(row)
        if fenced is not None:
            raise fenced
        decision.applied = applied

    @staticmethod
    def _encode(views: dict[str, FeatureView], rows: list[SinkRow]) -> dict[int, list[bytes]]:
        """Each upsert's serialised feature values, in the view's feature order: converted a feature
        column at a time (one call per feature, not per value)."""
        by_view: dict[str, list[SinkRow]] = {}
        for row in rows:
            if row.op != DELETE:
                by_view.setdefault(row.view, []).append(row)
        out: dict[int, list[bytes]] = {}
        for name, group in by_view.items():
            columns = [
                value_bytes([r.features.get(f.name) for r in group], f.dtype.to_value_type())
                for f in views[name].features
            ]
            for i, row in enumerate(group):
                out[id(row)] = [column[i] for column in columns]
        return out

    def _call(
        self,
        pipe: Any,
        view: FeatureView,
        row: SinkRow,
        fence_args: list[Any],
        values: Sequence[bytes] | None = None,
    ) -> None:
        """Queue the entity's Lua call on ``pipe``; ``values``: an upsert's encoded features, from
        ``_encode`` for a whole batch (computed here if not given)."""
        fields = self._feature_fields(view)
        key = self._hash_key(view, row.keys)
        deletions = [*fields.values(), f"_ts:{view.name}".encode(), f"_jk:{view.name}".encode()]
        pairs: list[Any] = []
        if row.op != DELETE:
            ts = Timestamp()
            ts.FromDatetime(row.event_time)
            pairs += [f"_ts:{view.name}", ts.SerializeToString()]
            if values is None:
                values = self._encode({view.name: view}, [row])[id(row)]
            for feature, raw in zip(view.features, values, strict=True):
                pairs += [fields[feature.name], raw]
        self._apply(
            keys=[
                key,
                self._fences,
                self._barrier_key,
                f"{self._prefix}:live:{view.name}",
                f"{self._prefix}:known:{view.name}",
            ],
            args=[
                view.name,
                row.version,
                row.version_minor,
                epoch_us(row.event_time),
                "d" if row.op == DELETE else "u",
                json.dumps(row.keys, default=str),
                *fence_args,
                len(deletions) if row.op == DELETE else 0,
                *(deletions if row.op == DELETE else []),
                *pairs,
            ],
            client=pipe,
        )

    def _write_barriers(self, tx: Any, views: set[str]) -> dict[str, Version]:
        for view, (version, minor) in self._barriers.items():
            current = self._client.hget(self._barrier_key, view)
            held = tuple(int(x) for x in current.decode().split(":")) if current else (-1, -1)
            if (version, minor) > held:  # the barrier's writer is the table's single owner at that moment
                self._client.hset(self._barrier_key, view, f"{version}:{minor}")
        out: dict[str, Version] = {}
        for name, raw in self._client.hgetall(self._barrier_key).items():
            version, minor = raw.decode().split(":")
            out[name.decode()] = (int(version), int(minor))
        return out

    def _clear_below_barrier(self, tx: Any, view: FeatureView, barrier: Version) -> None:
        """A TRUNCATE: every live entity of the view stored below the barrier gets a delete at the barrier."""
        fence_args = self._fence_args()
        live = self._client.smembers(f"{self._prefix}:live:{view.name}")
        if not live:
            return
        with self._client.pipeline(transaction=False) as pipe:
            for key in live:
                pipe.hget(key, f"_jk:{view.name}")
            joins = pipe.execute()
        with self._client.pipeline(transaction=False) as pipe:
            for join in joins:
                if join is None:
                    continue
                row = SinkRow(
                    view.name,
                    DELETE,
                    json.loads(join),
                    {},
                    datetime.now(UTC),
                    barrier[0],
                    "t",
                    "truncate",
                    None,
                    barrier[1],
                )
                self._call(pipe, view, row, fence_args)
            pipe.execute()

    def _current_versions(self, tx: Any, idents: list[tuple[str, bytes]]) -> Stored:
        with self._client.pipeline(transaction=False) as pipe:
            for view_name, key in idents:
                pipe.hget(key + self.project.encode(), f"_ver:{view_name}")
            replies = pipe.execute() if idents else []
        out: Stored = {}
        for ident, raw in zip(idents, replies, strict=True):
            parsed = _parse_version(raw)
            if parsed is not None:
                out[ident] = (parsed[0], parsed[1])
        return out

    # --- reads ----------------------------------------------------------------------------------
    def current_features(self, view: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        feature_view = self._view(view)
        fields = self._feature_fields(feature_view)
        names = list(fields)
        with self._client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(self._hash_key(feature_view, k), [f"_ts:{view}", *fields.values()])
            replies = pipe.execute() if keys else []
        out: list[dict[str, Any] | None] = []
        for values in replies:
            if values[0] is None:  # no _ts:<view>: the view holds nothing for this entity
                out.append(None)
                continue
            out.append(
                {
                    name: feast_value_type_to_python_type(ValueProto.FromString(raw)) if raw else None
                    for name, raw in zip(names, values[1:], strict=True)
                }
            )
        return out

    def stored_vectors(
        self, spec: EmbeddingSpec, keys: Sequence[dict[str, Any]]
    ) -> list[StoredVector | None]:
        return [None] * len(keys)

    def stored_orders(self, view: str, keys: Sequence[dict[str, Any]]) -> list[Version | None]:
        feature_view = self._view(view)
        idents = [(view, self._entity_key(feature_view, k)) for k in keys]
        current = self._current_versions(None, idents)
        return [current[i][0] if i in current else None for i in idents]

    def live_keys(self, view: str) -> list[dict[str, Any]]:
        live = list(self._client.smembers(f"{self._prefix}:live:{view}"))
        with self._client.pipeline(transaction=False) as pipe:
            for key in live:
                pipe.hget(key, f"_jk:{view}")
            joins = pipe.execute() if live else []
        return [json.loads(j) for j in joins if j is not None]

    def reset(self) -> int:
        """Remove every view's fields and bookkeeping from every entity this project wrote; the count of live ones."""
        held = 0
        for view in self.store.list_feature_views():
            fields = [
                *self._feature_fields(view).values(),
                f"_ts:{view.name}",
                f"_jk:{view.name}",
                f"_ver:{view.name}",
            ]
            held += int(self._client.scard(f"{self._prefix}:live:{view.name}"))
            known = self._client.smembers(f"{self._prefix}:known:{view.name}")
            with self._client.pipeline(transaction=False) as pipe:
                for key in known:
                    pipe.hdel(key, *fields)
                pipe.delete(f"{self._prefix}:live:{view.name}", f"{self._prefix}:known:{view.name}")
                pipe.execute()
        self._client.delete(self._barrier_key)
        return held

    def close(self) -> None:
        self._client.close()
