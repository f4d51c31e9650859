"""Atomic visibility of source transactions (stores/transactions.py) in Redis, which has no transaction over
reads and writes: the same rule, in three steps, each atomic on the server and each safe to repeat.

1. **record** (one MULTI/EXEC): each change seen (``txn:seen:<xid>``, a set of ``total_order``; its commit
   position in ``txn:seen_version``), each END (``txn:ends``, scored by its offset on the transaction topic)
   and each batch's held rows (one ``pack`` blob in ``txn:held:<xid>``, counted in ``txn:held_rows``) together, so no writer counts a change whose row it cannot find;
2. **decide** (one Lua script, reading only): the prefix of ENDs whose transactions are complete (or given up
   on), in commit order;
3. **release**, in the same MULTI/EXEC as the flush's writes (the version-guarded script calls): the released
   transactions' held rows applied, their bookkeeping deleted and the frontier raised (never lowered). A
   reader's lookup is one MULTI/EXEC too (stores/redis/feast.py), so it sees a release whole or not at all.

Two writers deciding the same prefix both apply it: the version guard makes the second a no-op, and the frontier
only rises. A crash between the steps leaves recorded, unreleased state that the re-read batch records again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core import metrics
from stores.sink import SinkRow
from stores.transactions import HEAD, SQLITE, Gate, State

# KEYS: frontier, ends, released, seen_version. ARGV: seen key prefix, max wait (s), head, wait (s) of an END from
# before an accepted retention gap (below the frontier's gap_position).
# Returns {n heads looked at, when the frontier last moved (us), then per released transaction: xid, END offset,
# commit position, partial 0|1}. An END waits from when it became the head: the frontier's last move for a
# transaction complete (a catch-up whose ENDs run ahead of their changes waits none), not for one given up on.
DECIDE = """
local fpos = tonumber(redis.call('HGET', KEYS[1], 'position') or '-1')
local fver = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
local moved = tonumber(redis.call('HGET', KEYS[1], 'moved_us') or '0')
local gap = tonumber(redis.call('HGET', KEYS[1], 'gap_position') or '-1')
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local heads = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. fpos, '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {0, 0}
local n = 0
for i = 1, #heads, 2 do
  n = n + 1
  local xid, events, recorded = string.match(heads[i], '^(.*)|(%d+)|(%d+)$')
  local counted = redis.call('SCARD', ARGV[1] .. xid)
  local partial = 0
  if counted < tonumber(events) and redis.call('SISMEMBER', KEYS[3], xid) == 0 then
    local limit = tonumber(ARGV[2])
    if tonumber(heads[i + 1]) < gap then limit = tonumber(ARGV[4]) end
    if (now_us - math.max(tonumber(recorded), moved)) / 1e6 < limit then break end
    partial = 1
  else
    moved = now_us
  end
  local ver = tonumber(redis.call('HGET', KEYS[4], xid) or fver)
  out[#out + 1] = xid
  out[#out + 1] = heads[i + 1]
  out[#out + 1] = string.format('%.0f', ver)
  out[#out + 1] = partial
end
out[1] = n
out[2] = string.format('%.0f', moved)
return out
"""

# KEYS: frontier. ARGV: position, version, when it moved (us). Raises the frontier, never lowers it.
RAISE = """
local pos = tonumber(redis.call('HGET', KEYS[1], 'position') or '-1')
if tonumber(ARGV[1]) > pos then
  redis.call('HSET', KEYS[1], 'position', ARGV[1], 'version', ARGV[2], 'moved_us', ARGV[3])
end
return 1
"""


def key_prefix(project: str) -> str:
    """Where the processor's keys of ``project`` live in Redis (Feast's own keys are the entity keys)."""
    return f"featurectl:{project}"


def frontier_key(prefix: str) -> str:
    """The frontier's hash: its ``position`` moves in the same MULTI/EXEC as every release (``release``)."""
    return f"{prefix}:txn:frontier"


@dataclass
class RedisGate(Gate):
    """The rule over a Redis client; ``step`` records and decides, ``release`` queues the rest on the flush's
    MULTI/EXEC pipeline."""

    client: Any = None
    prefix: str = ""
    _release: list[tuple[str, int, int]] = field(default_factory=list)  # (xid, END offset, commit position)
    _given_up: list[str] = field(default_factory=list)
    _moved_us: int = 0  # when the frontier last moved, as the last decision left it

    def __post_init__(self) -> None:
        p = f"{self.prefix}:txn"
        self.frontier_key, self.ends_key, self.released_key = (
            frontier_key(self.prefix),
            f"{p}:ends",
            f"{p}:released",
        )
        self.seen_version_key, self.seen_prefix, self.held_prefix, self.held_rows_key = (
            f"{p}:seen_version",
            f"{p}:seen:",
            f"{p}:held:",
            f"{p}:held_rows",
        )
        self._decide = self.client.register_script(DECIDE)
        self._raise = self.client.register_script(RAISE)

    @property
    def releasing(self) -> bool:
        """Whether the flush must run as one MULTI/EXEC with ``release``'s commands."""
        return bool(self._release or self._given_up)

    def discard(self) -> None:
        super().discard()
        self._release.clear()
        self._given_up.clear()

    def step(self, tx: Any, rows: Sequence[SinkRow]) -> list[SinkRow]:
        c = self.client
        raw = c.hmget(self.frontier_key, ["position", "version"])
        position, frontier = (int(raw[0]) if raw[0] else -1), (int(raw[1]) if raw[1] else -1)
        self.packed.forget_released(frontier)
        given_up = {m.decode() for m in c.smembers(self.released_key)}
        now: list[SinkRow] = []
        held: list[SinkRow] = []
        for row in rows:
            if row.txn is None or row.version <= frontier or row.txn in given_up:
                now.append(row)
            else:
                held.append(row)
        # 1. record, all at once
        with c.pipeline(transaction=True) as pipe:
            versions: dict[str, int] = {}
            by_txn: dict[str, list[int]] = {}
            for txn, order, version in self.seen:
                if version > frontier:
                    by_txn.setdefault(txn, []).append(order)
                    versions[txn] = version
            for txn, orders in by_txn.items():
                pipe.sadd(self.seen_prefix + txn, *orders)
            if versions:
                pipe.hset(self.seen_version_key, mapping=versions)
            seconds, micros = c.time() if self.ends else (0, 0)
            now_us = int(seconds) * 1_000_000 + int(micros)
            ends = {f"{t}|{e}|{now_us}": p for p, t, e in self.ends if p > position}
            if ends:
                pipe.zadd(self.ends_key, ends, nx=True)
            by_held: dict[str, list[SinkRow]] = {}
            for r in held:
                assert r.txn is not None
                by_held.setdefault(r.txn, []).append(r)
            for txn, part in by_held.items():
                # Named by where the part was read: the same batch re-read replaces itself.
                pipe.hset(
                    self.held_prefix + txn,
                    f"{part[0].source}|{part[-1].source}|{len(part)}",
                    self.packed.pack(part, self.max_rows),
                )
            for txn, part in by_held.items():
                pipe.hincrby(self.held_rows_key, txn, len(part))  # counted as read: a re-read part twice
            replies = pipe.execute()
        super().discard()
        large = [
            t
            for t, n in zip(by_held, replies[-len(by_held) :] if by_held else [], strict=True)
            if n > self.max_rows
        ]
        for txn in large:
            self._surface(txn, f"it holds more than {self.max_rows:,} rows (FEATURECTL_TXN_MAX_ROWS)")
            c.hincrby(self.frontier_key, "partial", 1)
            c.sadd(self.released_key, txn)
            now += self._held_rows([txn])
            self._given_up.append(txn)
        if self.gap >= 0:  # an accepted retention gap (accept_gap): raised, never lowered
            held_gap = c.hget(self.frontier_key, "gap_position")
            if held_gap is None or int(held_gap) < self.gap:
                c.hset(self.frontier_key, "gap_position", self.gap)
        # 2. decide
        out = self._decide(
            keys=[self.frontier_key, self.ends_key, self.released_key, self.seen_version_key],
            args=[self.seen_prefix, self.max_wait_s, HEAD, self.gap_wait_s],
        )
        looked, self._moved_us = int(out[0]), int(out[1])
        self._release = []
        for i in range(2, len(out), 4):
            xid, end_at, version, partial = (
                out[i].decode(),
                int(float(out[i + 1])),
                int(out[i + 2]),
                int(out[i + 3]),
            )
            if partial:
                self._surface(xid, f"its END waited {self.max_wait_s:.0f} s for its changes")
                self.client.hincrby(self.frontier_key, "partial", 1)
            self._release.append((xid, end_at, version))
        self.waiting = looked > len(self._release) or looked == HEAD  # more ENDs past those read
        metrics.TRANSACTIONS_WAITING.set(looked - len(self._release))
        if self._release:
            now += self._held_rows([x for x, _, _ in self._release], delete=False)
        return now

    def _held_rows(self, txids: list[str], delete: bool = True) -> list[SinkRow]:
        """The held rows of ``txids`` (removed now if ``delete``, else by ``release``)."""
        with self.client.pipeline(transaction=False) as pipe:
            for txid in txids:
                pipe.hvals(self.held_prefix + txid)
                if delete:
                    pipe.delete(self.held_prefix + txid)
                    pipe.hdel(self.held_rows_key, txid)
            replies = pipe.execute()
        step = 3 if delete else 1
        return [row for values in replies[::step] for blob in values for row in self.packed.unpack(blob)]

    def release(self, pipe: Any) -> None:
        """Queue on the flush's MULTI/EXEC pipeline what releasing the decided transactions leaves to do."""
        if self._release:
            xids = [x for x, _, _ in self._release]
            position = max(p for _, p, _ in self._release)
            version = max(v for _, _, v in self._release)
            for xid in xids:
                pipe.delete(self.held_prefix + xid, self.seen_prefix + xid)
            pipe.hdel(self.seen_version_key, *xids)
            pipe.hdel(self.held_rows_key, *xids)
            pipe.zremrangebyscore(self.ends_key, "-inf", position)
            pipe.srem(self.released_key, *xids)
            self._raise(keys=[self.frontier_key], args=[position, version, self._moved_us], client=pipe)
            metrics.TRANSACTIONS_RELEASED.inc(len(xids))
        self._release = []
        self._given_up = []

    def state(self) -> State:
        """The rule's state in this Redis (reads only)."""
        c = self.client
        oldest = c.zrange(self.ends_key, 0, 0)
        recorded = int(oldest[0].decode().rsplit("|", 1)[1]) if oldest else None
        seconds, micros = c.time()
        age = (
            None if recorded is None else max(0.0, (int(seconds) * 1_000_000 + int(micros) - recorded) / 1e6)
        )
        held = sum(int(n) for n in c.hvals(self.held_rows_key))
        partial = c.hget(self.frontier_key, "partial")
        return State(int(c.zcard(self.ends_key)), age, held, int(partial) if partial else 0)

    def reset(self) -> None:
        """Forget every transaction (``featurectl online reset``)."""
        self.packed.clear()
        keys = [
            self.frontier_key,
            self.ends_key,
            self.released_key,
            self.seen_version_key,
            self.held_rows_key,
        ]
        for pattern in (self.seen_prefix + "*", self.held_prefix + "*"):
            keys += list(self.client.scan_iter(match=pattern, count=1000))
        self.client.delete(*keys)


def redis_gate(client: Any, prefix: str) -> RedisGate:
    """The gate of a Redis sink (its SQL dialect is unused)."""
    return RedisGate(SQLITE, client=client, prefix=prefix)
