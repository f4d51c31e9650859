"""Feast's Redis online store as a sink: Feast's layout, the version guard and deletes atomic in Redis.

Feast keeps one hash per entity key (serialised key + project), shared by every view of that entity:
``mmh3("<view>:<feature>")`` -> ValueProto bytes and ``_ts:<view>`` -> the event time. Feast's own
write reads ``_ts`` and then writes (not atomic) and never deletes. Here one Lua script call per chunk of
up to ``CHUNK`` entities of one view (atomic in Redis) checks, then writes, touching only its own view's
fields:

- the writer's partition fences (``featurectl:<project>:fences``, streams/fencing.py): a claim since
  the batch was read refuses the whole chunk before it writes anything;
- the view's TRUNCATE barrier (``featurectl:<project>:barriers``);
- each entity's stored version, ``_ver:<view>`` in the entity's own hash (``version:minor:event_us:deleted``,
  kept after a delete: the tombstone); an older change is refused, that entity alone;
- then HSET of the view's fields (and ``_jk:<view>``, its join keys) or, for a delete, HDEL of them.

Atomicity is per chunk, not per flush: a flush refused by a fence part way has written the earlier
chunks while this writer still owned their partitions, and the new owner re-applies the batch from
the committed offset (versions make that idempotent). One call per chunk instead of one per entity is
what makes the guarded write cheaper than Feast's unguarded one (bench/online_store_bench.py). Versions
are compared as Lua numbers (doubles): exact below 2**53, i.e. for WAL positions up to 8 PiB. Vector
features are refused: Feast's Redis store has no vector search.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from feast import FeatureStore, FeatureView
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import ConfigError, FencedError
from embeddings.spec import EmbeddingSpec, spec_for
from stores.feast_layout import Decision, FeastLayoutSink, Latest, Stored, Version, fenced, lost_partitions
from stores.ordering import epoch_us
from stores.redis import KIND
from stores.redis.feast import TYPE as REDIS_TYPE
from stores.redis.transactions import RedisGate, key_prefix, redis_gate
from stores.registry import vector_types
from stores.sink import DELETE, Partition, SinkRow, StoredVector
from stores.transactions import State
from stores.values import value_bytes

logger = logging.getLogger(__name__)
_JSON = msgspec.json.Encoder()

# Entities per script call: Redis runs a script alone, so a chunk bounds how long others wait (~1 ms).
CHUNK = 256

# One call per chunk of one view's entities (atomic in Redis as a whole).
# KEYS: fences, barriers, live set of the view, known set of the view, then one entity hash per entity.
# ARGV: view, n fences, n x (field, epoch), nf, the view's nf value fields (``_ts:<view>`` and each
#       feature's), then per entity: its stamp ``version:minor:event_us``, op, join keys, and for op 'u'
#       the nf values in that field order. A delete removes the nf fields and the join keys.
# The field names go once per call and the versions as one stamp: packing the arguments is the sink's
# largest cost in Python, per argument (bench/processor_bench.py --online-store redis).
# Returns {'fenced', field, epoch} before writing anything, or one verdict per entity: ok|older|barrier.
APPLY = """
local function lt(v1, m1, v2, m2) return v1 < v2 or (v1 == v2 and m1 < m2) end
local function parse(s) local a, b = string.match(s, '^(-?%d+):(-?%d+)'); return tonumber(a), tonumber(b) end
local view = ARGV[1]
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and tonumber(cur) > tonumber(ARGV[i + 1]) then return {'fenced', ARGV[i], cur} end
  i = i + 2
end
local vfield, jfield = '_ver:' .. view, '_jk:' .. view
local nf = tonumber(ARGV[i])
local names = {}
for f = 1, nf do names[f] = ARGV[i + f] end
i = i + nf + 1
local b = redis.call('HGET', KEYS[2], view)
local bv, bm
if b then bv, bm = parse(b) end
local out, live, gone, known = {}, {}, {}, {}
for k = 5, #KEYS do
  local key = KEYS[k]
  local stamp, op, jk = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = i + 3
  if op == 'u' then i = first + nf else i = first end
  local v, m = parse(stamp)
  local verdict = 'ok'
  if b and lt(v, m, bv, bm) then
    verdict = 'barrier'
  else
    local s = redis.call('HGET', key, vfield)
    if s then
      local sv, sm = parse(s)
      if lt(v, m, sv, sm) then verdict = 'older' end
    end
  end
  if verdict == 'ok' then
    if op == 'd' then
      redis.call('HDEL', key, jfield, unpack(names))
      redis.call('HSET', key, vfield, stamp .. ':1')
      gone[#gone + 1] = key
    else
      local args = {vfield, stamp .. ':0', jfield, jk}
      for f = 1, nf do
        args[2 * f + 3] = names[f]
        args[2 * f + 4] = ARGV[first + f - 1]
      end
      redis.call('HSET', key, unpack(args))
      live[#live + 1] = key
    end
    known[#known + 1] = key
  end
  out[#out + 1] = verdict
end
-- One key appears once per call (the batch keeps each entity's latest change), so the set updates
-- can go last, one command each.
if #live > 0 then redis.call('SADD', KEYS[3], unpack(live)) end
if #gone > 0 then redis.call('SREM', KEYS[3], unpack(gone)) end
if #known > 0 then redis.call('SADD', KEYS[4], unpack(known)) end
return out
"""

# Each KEYS[i]'s field ARGV[i] (its view's stored version), false where none.
VERSIONS = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[i]) end
return out
"""


def _join_keys(keys: dict[str, Any]) -> bytes:
    """An entity's join keys as JSON (read back by ``json.loads``): msgspec for ints and strings, the
    usual case and 10x cheaper; ``json.dumps`` with ``str`` for anything else, as before."""
    if all(type(v) is int or type(v) is str for v in keys.values()):
        try:
            return _JSON.encode(keys)
        except UnicodeEncodeError:  # a lone surrogate: json escapes it
            pass
    return json.dumps(keys, default=str).encode()


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
        self._versions = self._client.register_script(VERSIONS)
        self._pending: list[SinkRow] = []
        self._barriers: dict[str, Version] = {}
        prefix = key_prefix(self.project)
        self._fences, self._owners, self._barrier_key = (
            f"{prefix}:fences",
            f"{prefix}:fence_owners",
            f"{prefix}:barriers",
        )
        self._prefix = prefix
        self._fields: dict[str, tuple[FeatureView, dict[str, bytes]]] = {}
        self._gate: RedisGate | None = redis_gate(self._client, prefix)

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
        """An embedding view is refused (nothing here would search what the processor embeds); a plain vector
        view's vectors are values like the others, as in Feast's Redis store."""
        if spec_for(view) is not None:
            raise ConfigError(
                f"feature view {view.name} embeds text, and Feast's Redis online store has no vector search",
                f"keep the view on an online store that indexes vectors: {vector_types()}",
            )

    # --- buffering and fencing ------------------------------------------------------------------
    def discard(self) -> None:
        self._pending.clear()
        self._barriers.clear()
        if self._gate is not None:
            self._gate.discard()

    def claim(self, partitions: Sequence[Partition], owner: str) -> dict[Partition, int]:
        with self._client.pipeline(transaction=True) as pipe:
            for topic, partition in partitions:
                pipe.hincrby(self._fences, f"{topic}|{partition}", 1)
                pipe.hset(self._owners, f"{topic}|{partition}", owner)
            replies = pipe.execute()
        return {p: int(replies[2 * i]) for i, p in enumerate(partitions)}

    def _fence_args(self) -> list[Any]:
        args: list[Any] = [len(self._held)]
        for (topic, partition), epoch in sorted(self._held.items()):
            args += [f"{topic}|{partition}", epoch]
        return args

    def _refuse(self, field: str, epoch: bytes) -> FencedError:
        topic, partition = field.rsplit("|", 1)
        raw = self._client.hget(self._owners, field)
        owner = raw.decode() if raw else "?"
        return fenced(
            lost_partitions(self._held, [(topic, int(partition), int(epoch), owner, None)]), partial=True
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
        # Redis has no transaction over reads and writes here: the Lua script is the atomic step, a chunk
        # of entities at a time, and checks the fences and the version guard again itself.
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
        keys = {id(row): key for (_, key), (row, _) in latest.items()}  # Feast's entity keys, computed once
        verdicts = self._apply_rows(views, decision.applied, keys)
        applied = [row for row, verdict in zip(decision.applied, verdicts, strict=True) if verdict == "ok"]
        # Not ok: another writer stored a newer version (or a barrier) since the pre-read.
        decision.skipped += [
            row for row, verdict in zip(decision.applied, verdicts, strict=True) if verdict != "ok"
        ]
        decision.applied = applied

    def _apply_rows(
        self, views: dict[str, FeatureView], rows: list[SinkRow], keys: Mapping[int, bytes] | None = None
    ) -> list[str]:
        """Run the script over ``rows`` (one call per chunk of one view's entities, pipelined); each row's
        verdict, in order. ``keys``: Feast's entity key per ``id(row)`` where already known. Raises FencedError if a held partition was claimed: the chunks before the one
        refused stay written (this writer still owned their partitions when they ran)."""
        fence_args = self._fence_args()
        encoded = self._encode(views, rows)
        by_view: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            by_view.setdefault(row.view, []).append(index)
        chunks = [
            indexes[start : start + CHUNK]
            for indexes in by_view.values()
            for start in range(0, len(indexes), CHUNK)
        ]
        # Releasing source transactions (stores/redis/transactions.py): the whole flush is one MULTI/EXEC, so a
        # reader (one MULTI/EXEC too) sees every released row or none; otherwise chunk by chunk.
        gate = self._gate
        releasing = gate is not None and gate.releasing
        with self._client.pipeline(transaction=releasing) as pipe:
            for chunk in chunks:
                view = views[rows[chunk[0]].view]
                self._call(pipe, view, [rows[i] for i in chunk], fence_args, encoded, keys or {})
            if gate is not None:
                gate.release(pipe)
            replies = pipe.execute()[: len(chunks)] if chunks or releasing else []
        verdicts = [""] * len(rows)
        for chunk, reply in zip(chunks, replies, strict=True):
            head = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            if head == "fenced":
                raise self._refuse(reply[1].decode(), reply[2])
            for index, verdict in zip(chunk, reply, strict=True):
                verdicts[index] = verdict.decode() if isinstance(verdict, bytes) else verdict
        return verdicts

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
        rows: Sequence[SinkRow],
        fence_args: list[Any],
        encoded: Mapping[int, Sequence[bytes]],
        keys: Mapping[int, bytes],
    ) -> None:
        """Queue one script call for ``rows`` (all of ``view``) on ``pipe``; ``encoded``: the upserts'
        feature values from ``_encode``; ``keys``: entity keys known already (by ``id(row)``)."""
        fields = self._feature_fields(view)
        project = self.project.encode()
        script_keys: list[Any] = [
            self._fences,
            self._barrier_key,
            f"{self._prefix}:live:{view.name}",
            f"{self._prefix}:known:{view.name}",
        ]
        names = [f"_ts:{view.name}".encode(), *(fields[f.name] for f in view.features)]
        args: list[Any] = [view.name, *fence_args, len(names), *names]
        stamps: dict[int, bytes] = {}  # Feast's _ts value per event time (a batch's rows share commits)
        for row in rows:
            key = keys.get(id(row))
            script_keys.append(key + project if key is not None else self._hash_key(view, row.keys))
            event_us = epoch_us(row.event_time)
            stamp = f"{row.version}:{row.version_minor}:{event_us}"
            if row.op == DELETE:
                args += [stamp, "d", ""]
                continue
            ts = stamps.get(event_us)
            if ts is None:
                # Feast's _ts field: a protobuf Timestamp (what Timestamp.FromDatetime makes, without its cost).
                ts = stamps[event_us] = Timestamp(
                    seconds=event_us // 1_000_000, nanos=event_us % 1_000_000 * 1000
                ).SerializeToString()
            args += [stamp, "u", _join_keys(row.keys), ts, *encoded[id(row)]]
        self._apply(keys=script_keys, args=args, client=pipe)

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
        live = self._client.smembers(f"{self._prefix}:live:{view.name}")
        if not live:
            return
        with self._client.pipeline(transaction=False) as pipe:
            for key in live:
                pipe.hget(key, f"_jk:{view.name}")
            joins = pipe.execute()
        now = datetime.now(UTC)
        rows = [
            SinkRow(
                view.name, DELETE, json.loads(join), {}, now, barrier[0], "t", "truncate", None, barrier[1]
            )
            for join in joins
            if join is not None
        ]
        self._apply_rows({view.name: view}, rows)

    def _current_versions(self, tx: Any, idents: list[tuple[str, bytes]]) -> Stored:
        # One script call (a command per CHUNK keys, not one HGET each): the pre-read costs one round trip.
        replies: list[Any] = []
        project = self.project.encode()
        with self._client.pipeline(transaction=False) as pipe:
            for start in range(0, len(idents), CHUNK):
                chunk = idents[start : start + CHUNK]
                self._versions(
                    keys=[key + project for _, key in chunk],
                    args=[f"_ver:{v}" for v, _ in chunk],
                    client=pipe,
                )
            for reply in pipe.execute() if idents else []:
                replies += reply
        out: Stored = {}
        for ident, raw in zip(idents, replies, strict=True):
            parsed = _parse_version(raw or None)
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

    def live_keys(self, view: str) -> list[dict[str, Any]]:
        live = list(self._client.smembers(f"{self._prefix}:live:{view}"))
        with self._client.pipeline(transaction=False) as pipe:
            for key in live:
                pipe.hget(key, f"_jk:{view}")
            joins = pipe.execute() if live else []
        return [json.loads(j) for j in joins if j is not None]

    def _live_before(self, view: str, cutoff_us: int) -> list[tuple[dict[str, Any], Version, int]]:
        live = list(self._client.smembers(f"{self._prefix}:live:{view}"))
        with self._client.pipeline(transaction=False) as pipe:
            for key in live:
                pipe.hmget(key, [f"_ver:{view}", f"_jk:{view}"])
            replies = pipe.execute() if live else []
        out = []
        for raw, join in replies:
            parsed = _parse_version(raw)
            if parsed is None or join is None:
                continue
            version, event_us, deleted = parsed
            if not deleted and event_us is not None and event_us < cutoff_us:
                out.append((json.loads(join), version, event_us))
        return out

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
        (self._gate or redis_gate(self._client, self._prefix)).reset()  # even where this writer holds none
        return held

    def transaction_state(self) -> State:
        return redis_gate(self._client, self._prefix).state()

    def close(self) -> None:
        self._client.close()
