"""Atomic visibility of source transactions in the online store: a reader sees every change of a Postgres
transaction or none, across entities, views and tables, whichever processors wrote them (docs/processor.md,
"Transactions").

Debezium (``provide.transaction.metadata``) tags each streamed change with its transaction's id and its place
in it (``total_order``), and writes an END marker per transaction to the one-partition topic
``<prefix>.transaction``, in commit order, with the number of changes the transaction made. The changes of
one transaction sit in several partitions and topics, which different processors may own. So the state lives
in the online store and every writer keeps one rule, inside the store's own transaction (one atomic step with
the rows it writes, serialised between writers by a lock on the frontier):

- each change read is recorded as *seen* (``txid, total_order``: re-delivery counts once), whatever became of it
  (rows, a dead letter, no view);
- each END is recorded with its offset on the transaction topic (its place in commit order);
- a row of a transaction not yet released is *held* in the store, where no reader looks;
- transactions are released **in commit order, as a prefix**: the first END not released whose seen count
  equals its event count, then the next, and so on. Releasing a later transaction first would be wrong even
  when it is complete: its row of an entity carries the earlier transaction's effect on that entity (a
  balance after both transfers), so it would show half of the earlier one;
- a released transaction's held rows are applied with the flush's other rows (the version rule of
  stores/ordering.py), and the *frontier* (the last released END's offset and commit position) moves on. A
  change at or below the frontier's commit position (a re-delivery after a crash) is applied at once.

Bounds, each surfaced (a WARNING, ``featurectl_transactions_released_partial_total``, ``featurectl health``)
and never a crash: a transaction holding more than ``max_rows`` rows is released as it comes (its rows
visible in parts, in version order: atomicity given up for it alone, memory bounded); an END still
incomplete ``max_wait_s`` after it became the oldest waiting (its changes were read before this rule ran, or
went missing; a catch-up whose ENDs run ahead of their changes keeps the frontier moving) is released
with what was seen. Rows without a transaction (snapshot reads, jobs, replays) are visible at once.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from core import metrics
from stores.sink import SinkRow

logger = logging.getLogger(__name__)

SEEN = "featurectl_txn_seen"  # SQLite: a row per change read
# Postgres: a row per transaction and flush, the changes' total orders in an array (a B-tree insert per change
# was ~6 us of a catch-up's change); a change read twice (a re-delivery) is counted once at the decision.
SEEN_PARTS = "featurectl_txn_seen_parts"
ENDS = "featurectl_txn_ends"
HELD = "featurectl_txn_held_rows"  # one blob per transaction per flush (pack), ``rows`` rows in it
OLD_HELD = "featurectl_txn_held"  # before 2026-11-28: one pickled SinkRow per row; moved into HELD on open
FRONTIER = "featurectl_txn_frontier"
RELEASED = "featurectl_txn_released"  # transactions given up on (too large): their rows apply at once
GAP_WAIT_S = (
    10.0  # how long an END from before an accepted retention gap waits as the head (its changes may be gone)
)
HEAD = 500  # ENDs read per flush: the prefix ends at the first incomplete one anyway; within bind limits


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL stores: the placeholder, the blob type, the frontier lock."""

    mark: str  # "?" (SQLite) or "%s" (psycopg)
    blob: str  # BLOB or BYTEA
    lock: str  # appended to the frontier's SELECT: "" (SQLite's writer lock covers it) or " FOR UPDATE"
    exists: str  # a query of one row if the table named by its parameter exists, none if not
    arrays: (
        bool  # whether a column of many values binds as one array (Postgres: one statement, not one a row)
    )
    seen: str  # the table of seen changes: SEEN (a row each) or SEEN_PARTS (arrays)


SQLITE = Dialect(
    "?", "BLOB", "", "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", False, SEEN
)
POSTGRES = Dialect(
    "%s", "BYTEA", " FOR UPDATE", "SELECT 1 WHERE to_regclass(%s) IS NOT NULL", True, SEEN_PARTS
)


def tables(d: Dialect) -> tuple[str, ...]:
    """The rule's tables in a store of dialect ``d`` (emptied by ``online reset``)."""
    return (d.seen, ENDS, HELD, FRONTIER, RELEASED)


# A held row is stored as the tuple of its fields, many to a blob: pickling the dataclasses one by one cost
# ~30 us a row (its __getstate__), a third of a catch-up's time.
_NAMES = tuple(f.name for f in fields(SinkRow))
_VALUES = attrgetter(*_NAMES)


def pack(rows: Sequence[SinkRow]) -> bytes:
    """``rows`` as one blob (the field names with it: a blob written before a field was added still reads)."""
    return pickle.dumps((_NAMES, [_VALUES(r) for r in rows]), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes) -> list[SinkRow]:
    """The rows of a ``pack`` blob (or of one pickled SinkRow, as OLD_HELD stored them)."""
    data = pickle.loads(blob)
    if isinstance(data, SinkRow):
        return [data]
    names, values = data
    if names == _NAMES:
        return [SinkRow(*v) for v in values]
    return [SinkRow(**dict(zip(names, v, strict=True))) for v in values]


class Packed:
    """``pack`` and ``unpack`` for one writer, remembering the rows of the blobs it packed (at most the gate's
    ``max_rows``, oldest dropped first): a release reads the blob back and gets the rows it held without
    unpickling them (~4 us a row of a release). Keyed by the blob itself, so a remembered answer is exactly what
    unpacking would give; a blob another writer packed is unpacked."""

    def __init__(self) -> None:
        self._rows: dict[bytes, tuple[int, list[SinkRow]]] = {}  # blob -> (commit position, rows)
        self._count = 0

    def pack(self, rows: Sequence[SinkRow], max_rows: int) -> bytes:
        blob = pack(rows)
        while self._rows and self._count + len(rows) > max_rows:
            self._drop(next(iter(self._rows)))
        if len(rows) <= max_rows and blob not in self._rows:
            self._rows[blob] = (rows[0].version, list(rows))
            self._count += len(rows)
        return blob

    def unpack(self, blob: bytes) -> list[SinkRow]:
        held = self._rows.pop(blob, None)
        if held is None:
            return unpack(blob)
        self._count -= len(held[1])
        return held[1]

    def forget_released(self, frontier: int) -> None:
        """Drop the rows of transactions at or below the frontier (released, by this writer or another)."""
        for blob in [b for b, (version, _) in self._rows.items() if version <= frontier]:
            self._drop(blob)

    def clear(self) -> None:
        self._rows.clear()
        self._count = 0

    def _drop(self, blob: bytes) -> None:
        self._count -= len(self._rows.pop(blob)[1])


def schema(d: Dialect) -> list[str]:
    """The tables the rule keeps (created idempotently by each store's sink)."""
    seen = (
        [
            f"CREATE TABLE IF NOT EXISTS {SEEN_PARTS} (txid TEXT NOT NULL, orders BIGINT[] NOT NULL, "
            "version BIGINT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {SEEN_PARTS}_txid ON {SEEN_PARTS} (txid)",
        ]
        if d.seen == SEEN_PARTS
        else [
            f"CREATE TABLE IF NOT EXISTS {SEEN} (txid TEXT NOT NULL, total_order BIGINT NOT NULL, "
            "version BIGINT NOT NULL, PRIMARY KEY (txid, total_order))"
        ]
    )
    return [
        *seen,
        f"CREATE TABLE IF NOT EXISTS {ENDS} (position BIGINT PRIMARY KEY, txid TEXT NOT NULL, "
        "events BIGINT NOT NULL, recorded_us BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {HELD} (txid TEXT NOT NULL, rows BIGINT NOT NULL, row_data {d.blob} NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {HELD}_txid ON {HELD} (txid)",
        f"CREATE TABLE IF NOT EXISTS {FRONTIER} (id INT PRIMARY KEY, position BIGINT NOT NULL, "
        "version BIGINT NOT NULL, partial BIGINT NOT NULL DEFAULT 0, moved_us BIGINT NOT NULL DEFAULT 0, "
        "gap_position BIGINT NOT NULL DEFAULT -1)",
        f"INSERT INTO {FRONTIER} (id, position, version) VALUES (1, -1, -1) ON CONFLICT (id) DO NOTHING",
        f"CREATE TABLE IF NOT EXISTS {RELEASED} (txid TEXT PRIMARY KEY, reason TEXT NOT NULL, "
        "released_us BIGINT NOT NULL)",
    ]


# Where the releases stand: the frontier's position moves in the same commit as every release (step), so a reader
# that finds it equal before and after several reads saw no release between them (serving/lookup.py).
RELEASE_POSITION = f"SELECT position FROM {FRONTIER} WHERE id = 1"


def migrate(tx: Any, d: Dialect) -> None:
    """Move what an earlier version kept into today's tables (rows held one a row, OLD_HELD, into HELD; on
    Postgres, seen changes one a row, SEEN, into SEEN_PARTS); after ``schema``, in its transaction."""
    if tx.execute(d.exists, (OLD_HELD,)).fetchone() is not None:
        tx.execute(f"INSERT INTO {HELD} (txid, rows, row_data) SELECT txid, 1, row_data FROM {OLD_HELD}", ())
        tx.execute(f"DROP TABLE {OLD_HELD}", ())
    if d.seen != SEEN and tx.execute(d.exists, (SEEN,)).fetchone() is not None:
        tx.execute(
            f"INSERT INTO {d.seen} (txid, orders, version) "
            f"SELECT txid, array_agg(total_order), max(version) FROM {SEEN} GROUP BY txid",
            (),
        )
        tx.execute(f"DROP TABLE {SEEN}", ())


@dataclass(frozen=True)
class State:
    """What ``featurectl health`` shows of the rule in a store."""

    waiting: int  # ENDs read whose transaction is not visible yet
    oldest_s: float | None  # how long the oldest of them has waited
    held_rows: int  # rows held out of sight
    partial: int  # transactions made visible without atomicity (too large, or waited too long), ever


def state(tx: Any) -> State:
    """The rule's state in a SQL store (``tx``: a cursor or connection; reads only)."""
    waiting, oldest = tx.execute(f"SELECT count(*), min(recorded_us) FROM {ENDS}", ()).fetchone()
    (held,) = tx.execute(f"SELECT coalesce(sum(rows), 0) FROM {HELD}", ()).fetchone()
    row = tx.execute(f"SELECT partial FROM {FRONTIER} WHERE id = 1", ()).fetchone()
    age = None if oldest is None else max(0.0, time.time() - oldest / 1e6)
    return State(int(waiting), age, int(held), int(row[0]) if row else 0)


@dataclass
class Gate:
    """One writer's side of the rule: what its batch read (seen changes, ENDs, rows), and the step that
    records it and returns the rows to apply now. Store-neutral over SQL (``Dialect``)."""

    dialect: Dialect
    max_rows: int = 100_000
    max_wait_s: float = 600.0
    seen: list[tuple[str, int, int]] = field(default_factory=list)
    ends: list[tuple[int, str, int]] = field(default_factory=list)
    waiting: bool = False  # the last step left ENDs unreleased: an idle flush must look again (max_wait_s)
    gap_wait_s: float = GAP_WAIT_S
    gap: int = -1  # an accepted retention gap: the transaction topic's end then (accept_gap), not yet stored
    packed: Packed = field(default_factory=Packed, repr=False)
    # ENDs this writer recorded, not released when it last looked: a later batch holding all of such a
    # transaction's changes decides it without storing them (``_whole``). txid -> (END offset, changes).
    known_ends: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def add_seen(self, txn: str, order: int, version: int) -> None:
        self.seen.append((txn, order, version))

    def add_end(self, txn: str, events: int, position: int) -> None:
        self.ends.append((position, txn, events))

    def discard(self) -> None:
        self.seen.clear()
        self.ends.clear()

    def accept_gap(self, position: int) -> None:
        """Retention deleted changes this group never read (``process --accept-gaps``): the transactions whose
        ENDs are on the transaction topic below ``position`` (its end now) may never complete. They wait
        ``gap_wait_s`` as the head, not max_wait_s, then are released with what arrived."""
        self.gap = max(self.gap, position)
        self.waiting = True

    @property
    def busy(self) -> bool:
        """Whether a flush with no rows must still take the step."""
        return bool(self.seen or self.ends or self.waiting)

    def step(self, tx: Any, rows: Sequence[SinkRow]) -> list[SinkRow]:
        """Inside the store's write transaction (``tx``: a DB-API cursor or connection): record this batch's
        seen changes and ENDs, release every transaction the prefix rule allows, and hold this batch's rows of
        the others. Returns the rows to apply now: those without a transaction, those of released (or given
        up) transactions, held rows of earlier batches among them."""
        # Recorded first, without the frontier's lock: writers record in parallel. The frontier only grows, so a
        # stale read can only hold a row whose transaction is released already: a re-delivered copy of a row
        # applied then, left held (unseen) and harmless.
        position, frontier, given_up = self._where(tx)
        self.packed.forget_released(frontier)
        now_us = time.time_ns() // 1000
        # A change at or below the frontier belongs to a transaction released already (a re-delivery): not
        # counted again, and its rows apply at once (the version rule makes that idempotent).
        seen = [s for s in self.seen if s[2] > frontier]
        ends = [(p, t, e, now_us) for p, t, e in self.ends if p > position]
        # A transaction this batch read whole (every change; its END read now or recorded by this writer before)
        # needs no other writer's count: its seen changes are recorded only if it is not released by this step
        # (below), never inserted to be deleted.
        self.known_ends = {t: pe for t, pe in self.known_ends.items() if pe[0] > position}
        self.known_ends.update((t, (p, e)) for p, t, e, _ in ends)
        whole = _whole(seen, self.known_ends)
        self._record_seen(tx, [s for s in seen if s[0] not in whole])
        self._record_ends(tx, ends)
        self.discard()
        now: list[SinkRow] = []
        undecided: list[SinkRow] = []
        for row in rows:
            if row.txn is None or row.version <= frontier or row.txn in given_up:
                now.append(row)
            else:
                undecided.append(row)

        released, taken = self._release_prefix(tx, given_up, now_us, whole)
        now += taken
        # A whole transaction still waiting (an earlier one is not complete) is counted in the store now, under
        # the frontier's lock and before this commit: a writer that locks after this commit sees it complete.
        done = set(released)
        for txid in released:
            self.known_ends.pop(txid, None)
        self._record_seen(tx, [s for s in seen if s[0] in whole and s[0] not in done])
        # This batch's rows of a transaction released just now apply with it, never stored twice (in the
        # common case, a transaction read whole in one batch, nothing is held at all); the rest wait, stored
        # with the seen changes they were counted by (one commit: no writer counts a change whose row is missing).
        held: dict[str, list[SinkRow]] = {}
        for row in undecided:
            if row.txn in done:
                now.append(row)
            else:
                held.setdefault(row.txn, []).append(row)  # type: ignore[arg-type]
        if held:
            m = self.dialect.mark
            tx.executemany(
                f"INSERT INTO {HELD} (txid, rows, row_data) VALUES ({m}, {m}, {m})",
                [(txid, len(part), self.packed.pack(part, self.max_rows)) for txid, part in held.items()],
            )
            large = self._too_large(tx, sorted(held))
            for txid in large:
                self._surface(txid, f"it holds more than {self.max_rows:,} rows (FEATURECTL_TXN_MAX_ROWS)")
                tx.execute(f"UPDATE {FRONTIER} SET partial = partial + 1 WHERE id = 1", ())
                tx.execute(
                    f"INSERT INTO {RELEASED} (txid, reason, released_us) VALUES ({m}, 'too large', {m}) "
                    "ON CONFLICT DO NOTHING",
                    (txid, now_us),
                )
            if large:
                now += self._take(tx, large)
                self.waiting = True  # one given up on may be the head: the next flush looks again
        return now

    def _where(self, tx: Any) -> tuple[int, int, set[str]]:
        """The frontier's END offset and commit position, and the transactions given up on (read unlocked)."""
        if self.dialect.arrays:  # one round trip, not two: round trips are most of what a step costs
            position, frontier, given_up = tx.execute(
                f"SELECT position, version, ARRAY(SELECT txid FROM {RELEASED}) FROM {FRONTIER} WHERE id = 1",
                (),
            ).fetchone()
            return position, frontier, set(given_up)
        position, frontier = tx.execute(
            f"SELECT position, version FROM {FRONTIER} WHERE id = 1", ()
        ).fetchone()
        return position, frontier, {t for (t,) in tx.execute(f"SELECT txid FROM {RELEASED}", ()).fetchall()}

    def _record_ends(self, tx: Any, ends: list[tuple[int, str, int, int]]) -> None:
        if not ends:
            return
        if self.dialect.arrays:  # one statement: psycopg's executemany is a round trip per row
            positions, txids, events, recorded = (list(c) for c in zip(*ends, strict=True))
            tx.execute(
                f"INSERT INTO {ENDS} (position, txid, events, recorded_us) SELECT * FROM "
                "unnest(%s::bigint[], %s::text[], %s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
                (positions, txids, events, recorded),
            )
        else:
            tx.executemany(
                f"INSERT INTO {ENDS} (position, txid, events, recorded_us) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                ends,
            )

    def _record_seen(self, tx: Any, seen: list[tuple[str, int, int]]) -> None:
        if not seen:
            return
        if self.dialect.seen == SEEN_PARTS:  # one row per transaction, in one statement
            txids, orders, versions = (list(c) for c in zip(*seen, strict=True))
            tx.execute(
                f"INSERT INTO {SEEN_PARTS} (txid, orders, version) SELECT t, array_agg(o), max(v) "
                "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS p(t, o, v) GROUP BY t",
                (txids, orders, versions),
            )
        else:
            tx.executemany(
                f"INSERT INTO {SEEN} (txid, total_order, version) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                seen,
            )

    def _release_prefix(
        self, tx: Any, given_up: set[str], now_us: int, whole: dict[str, int]
    ) -> tuple[list[str], list[SinkRow]]:
        """The prefix: ENDs in commit order, each complete (or given up on), up to the first that is not;
        their bookkeeping deleted, their held rows taken (returned with them) and the frontier moved past them.
        ``whole``: the transactions this batch read every change of (not in the seen table), their commit position.
        Under the frontier's lock: one writer releases at a time, and (read committed) whoever locks last sees
        every other writer's seen changes, so the writer that completes a transaction, or the next, releases it."""
        m = self.dialect.mark
        if self.gap >= 0:
            tx.execute(
                f"UPDATE {FRONTIER} SET gap_position = {m} WHERE id = 1 AND gap_position < {m}",
                (self.gap, self.gap),
            )
        position, frontier, moved_us, gap_position = tx.execute(
            f"SELECT position, version, moved_us, gap_position FROM {FRONTIER} WHERE id = 1{self.dialect.lock}",
            (),
        ).fetchone()
        heads = tx.execute(self._heads, (position,)).fetchall()
        released: list[str] = []
        for end_at, txid, events, recorded_us, counted, version in heads:
            if txid in whole:
                counted, version = events, max(whole[txid], version if version is not None else -1)
            if counted < events and txid not in given_up:
                # Waiting counts from when this END became the head (the frontier's last move, or its arrival):
                # a catch-up whose ENDs run ahead of their changes keeps the frontier moving, and waits none.
                limit = self.gap_wait_s if end_at < gap_position else self.max_wait_s
                if (now_us - max(recorded_us, moved_us)) / 1e6 < limit:
                    break
                self._surface(
                    txid,
                    f"its END waited {limit:.0f} s for {events - counted} of {events} changes"
                    + (" (from before an accepted retention gap)" if end_at < gap_position else ""),
                )
                tx.execute(f"UPDATE {FRONTIER} SET partial = partial + 1 WHERE id = 1", ())
            else:
                moved_us = (
                    now_us  # complete: the next END is the head from now (one given up on moves nothing)
                )
            released.append(txid)
            position = end_at
            frontier = max(frontier, version if version is not None else frontier)
        self.waiting = len(heads) > len(released) or len(heads) == HEAD  # more ENDs past those read
        metrics.TRANSACTIONS_WAITING.set(len(heads) - len(released))
        if not released:
            return released, []
        metrics.TRANSACTIONS_RELEASED.inc(len(released))
        if self.dialect.arrays:
            # One statement for the whole release (each part a data-modifying CTE on its own table): the
            # step's round trips are most of what the rule adds to a small batch's online write.
            blobs = tx.execute(
                f"WITH s AS (DELETE FROM {SEEN_PARTS} WHERE txid = ANY(%s)), "
                f"e AS (DELETE FROM {ENDS} WHERE position <= %s), "
                f"r AS (DELETE FROM {RELEASED} WHERE txid = ANY(%s)), "
                f"f AS (UPDATE {FRONTIER} SET position = %s, version = %s, moved_us = %s WHERE id = 1) "
                f"DELETE FROM {HELD} WHERE txid = ANY(%s) RETURNING row_data",
                (released, position, released, position, frontier, moved_us, released),
            ).fetchall()
            return released, [row for (blob,) in blobs for row in self.packed.unpack(bytes(blob))]
        marks = ", ".join([m] * len(released))
        tx.execute(f"DELETE FROM {SEEN} WHERE txid IN ({marks})", released)
        tx.execute(f"DELETE FROM {ENDS} WHERE position <= {m}", (position,))
        tx.execute(f"DELETE FROM {RELEASED} WHERE txid IN ({marks})", released)
        tx.execute(
            f"UPDATE {FRONTIER} SET position = {m}, version = {m}, moved_us = {m} WHERE id = 1",
            (position, frontier, moved_us),
        )
        return released, self._take(tx, released)

    @property
    def _heads(self) -> str:
        """The first HEAD ENDs past a position: each with its changes counted (distinct) and their commit position."""
        m = self.dialect.mark
        if self.dialect.seen == SEEN_PARTS:
            return (
                f"SELECT e.position, e.txid, e.events, e.recorded_us, "
                f"(SELECT count(DISTINCT o) FROM {SEEN_PARTS} s, unnest(s.orders) o WHERE s.txid = e.txid), "
                f"(SELECT max(s.version) FROM {SEEN_PARTS} s WHERE s.txid = e.txid) "
                f"FROM {ENDS} e WHERE e.position > {m} ORDER BY e.position LIMIT {HEAD}"
            )
        return (
            f"SELECT e.position, e.txid, e.events, e.recorded_us, count(s.txid), max(s.version) FROM {ENDS} e "
            f"LEFT JOIN {SEEN} s ON s.txid = e.txid WHERE e.position > {m} "
            f"GROUP BY e.position, e.txid, e.events, e.recorded_us ORDER BY e.position LIMIT {HEAD}"
        )

    def _take(self, tx: Any, txids: list[str]) -> list[SinkRow]:
        """The held rows of ``txids``, removed from the store."""
        marks = ", ".join([self.dialect.mark] * len(txids))
        blobs = tx.execute(f"DELETE FROM {HELD} WHERE txid IN ({marks}) RETURNING row_data", txids).fetchall()
        return [row for (blob,) in blobs for row in self.packed.unpack(bytes(blob))]

    def _too_large(self, tx: Any, txids: list[str]) -> list[str]:
        """Those of ``txids`` holding more than ``max_rows`` rows (counted as read: a re-delivered part twice)."""
        out: list[str] = []
        for i in range(0, len(txids), HEAD):
            chunk = txids[i : i + HEAD]
            marks = ", ".join([self.dialect.mark] * len(chunk))
            out += [
                t
                for (t,) in tx.execute(
                    f"SELECT txid FROM {HELD} WHERE txid IN ({marks}) GROUP BY txid "
                    f"HAVING sum(rows) > {int(self.max_rows)}",
                    chunk,
                ).fetchall()
            ]
        return out

    @staticmethod
    def _surface(txid: str, why: str) -> None:
        logger.warning(
            "source transaction %s is made visible without atomicity: %s. Readers may see part of it until "
            "all of it is written; nothing is lost",
            txid,
            why,
        )
        metrics.TRANSACTIONS_PARTIAL.inc()


def _whole(seen: list[tuple[str, int, int]], ends: dict[str, tuple[int, int]]) -> dict[str, int]:
    """The transactions whose END is in ``ends`` (txid -> (offset, changes)) and every change of which is in
    ``seen`` (distinct total orders; a re-delivered change counts once), with their commit position."""
    if not ends:
        return {}
    expected = {t: e for t, (_, e) in ends.items()}
    orders: dict[str, set[int]] = {}
    versions: dict[str, int] = {}
    for txid, order, version in seen:
        if txid in expected:
            orders.setdefault(txid, set()).add(order)
            versions[txid] = max(version, versions.get(txid, version))
    return {t: versions[t] for t, got in orders.items() if len(got) >= expected[t]}
