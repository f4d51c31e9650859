"""The ordering of changes: what version a row carries, and what may overwrite what. One place.

A version is a pair ``(commit position, change position)``, compared as a tuple. Every writer of the
online store (processor, replay, materialize) keeps, per entity, the version of the last change it
applied, and applies a row only if its version is not lower: one atomic step in the store.

Streamed changes (``c``, ``u``, ``d``, ``t``): ``(source.sequence[0], source.lsn)``. Measured on
Debezium 3.7 with pgoutput: ``sequence[0]`` is the end position of the transaction committed just
before the change's own, so it grows strictly from one transaction to the next in commit order, and
is equal within a transaction, where ``lsn`` (each change's own WAL position) orders its changes.
``lsn`` alone is *not* commit order: a transaction that updates a row, stays open and commits later
carries an ``lsn`` from before it committed (seen: lsn 26514584, sequence[0] 26516984).

Snapshot reads (``r``): an incremental snapshot reads a chunk between a low and a high watermark in
the stream; Debezium drops the read of any key that changed inside that window, and emits the rest
after the window, with ``sequence = [X, X]`` and no ``lsn``, X being the position the stream had
reached when the window closed. A read's version is ``(X, -1)``: above every change committed before
the window (whose ``sequence[0]`` is lower), so it repairs a stale or wrong stored row; below every
change committed after the window (whose ``sequence[0]`` is X or more, with a change position of 0 or
more), so it never overrides a change committed after the read. The connector's initial snapshot
reads carry the snapshot's ``lsn``, used the same way.

Rows without a source position (backfill: version ``(0, 0)``) lose to every streamed change.

A source whose positions went backwards (a restored or rebuilt cluster, a logical upgrade: positions
start over) would make every later change of an existing entity look older. Within one cluster an
entity's later change has both a higher version and a later commit time (row locks serialise its
writers), so a streamed change with a *lower* version but a commit time more than ``REWIND_SLACK_US``
*later* than the stored change can only come from another cluster: the store raises
SourceChangedError, the processor stops, and docs/processor.md says how to recover. Re-deliveries, replays and
materialisations carry old commit times and are simply skipped as older.

History (the offline store) keeps every committed state of an entity, but not a transaction's
intermediate ones: of an entity's changes sharing a commit time only the highest version is written
(``last_of_each_instant``; a re-delivered earlier one is dropped when the online store already holds
a later change of the same instant). Feast's point-in-time join breaks ties of event time arbitrarily,
so two rows at one instant would make training sets depend on luck. ``featurectl compact`` (jobs/compact.py)
applies the same rule to what is already written.

Versions order rows entity by entity; fencing (streams/fencing.py) keeps a processor that lost its
partitions from writing a batch at all, so a stale copy adds nothing to the offline history either.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from core.errors import SourceChangedError

Version = tuple[int, int]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READ = -1  # the change position of a snapshot read: below any change streamed from its position on
REWIND_SLACK_US = 1_000_000
STREAMED_OPS = frozenset({"c", "u", "d"})
RECOVERY = (
    "stop every processor; `featurectl online reset --yes` (empties the online store and its versions); "
    "start the processor again; then `featurectl snapshot <schema.table> ... --wait 3600` re-reads every "
    "row of the captured tables from the new source"
)


class Positioned(Protocol):
    """What a version is read from: a decoded change event (streams/events.py ChangeEvent)."""

    @property
    def op(self) -> str: ...
    @property
    def sequence(self) -> tuple[int | None, int | None] | None: ...
    @property
    def lsn(self) -> int | None: ...


def version_of(event: Positioned) -> Version:
    """The version of ``event``'s row, as the module docstring defines it."""
    commit_before, position = event.sequence if event.sequence else (None, None)
    lsn = event.lsn if event.lsn is not None else position
    if event.op == "r":
        base = commit_before if commit_before is not None else lsn
        return (base or 0, READ)
    base = commit_before if commit_before is not None else lsn
    return (base or 0, lsn or 0)


def epoch_us(when: datetime) -> int:
    """A timezone-aware time as integer microseconds since the epoch (how the store keeps commit times)."""
    return (when - EPOCH) // timedelta(microseconds=1)


def check_not_rewound(row: Any, stored: Version, stored_us: int) -> None:
    """Raise SourceChangedError if ``row`` (older than ``stored``) was committed clearly after it."""
    if row.cdc_op in STREAMED_OPS and epoch_us(row.event_time) > stored_us + REWIND_SLACK_US:
        raise SourceChangedError(
            f"the source's WAL positions went backwards: {row.view} {row.keys} changed at "
            f"{row.event_time.isoformat()} with version {row.order}, below the stored {stored} of a change "
            f"committed earlier ({row.source}). Postgres was restored, rebuilt or replaced, and every later "
            "change of an existing entity would be skipped as older",
            RECOVERY,
        )


def last_of_each_instant(rows: list[Any]) -> list[Any]:
    """Per entity and event time, only the highest version, in the rows' order.

    Changes of one transaction share its commit time; only its last state was ever visible in
    Postgres, and Feast's point-in-time join picks arbitrarily among rows with equal event times.
    """
    last: dict[tuple[Any, datetime], Any] = {}
    for row in rows:
        ident = (entity_ident(row.keys), row.event_time)
        held = last.get(ident)
        if held is None or row.order >= held.order:
            last[ident] = row
    kept = {id(r) for r in last.values()}
    return [r for r in rows if id(r) in kept]


def entity_ident(keys: dict[str, Any]) -> Any:
    """A hashable identity of an entity's join keys (JSON text only for unhashable values, e.g. a list)."""
    ident = tuple(sorted(keys.items()))
    try:
        hash(ident)
    except TypeError:
        return json.dumps(keys, sort_keys=True, default=str)
    return ident
