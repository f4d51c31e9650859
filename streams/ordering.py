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
"""

from __future__ import annotations

from streams.events import ChangeEvent

Version = tuple[int, int]
READ = -1  # the change position of a snapshot read: below any change streamed from its position on


def version_of(event: ChangeEvent) -> Version:
    """The version of ``event``'s row, as the module docstring defines it."""
    commit_before, position = event.sequence if event.sequence else (None, None)
    lsn = event.lsn if event.lsn is not None else position
    if event.op == "r":
        base = commit_before if commit_before is not None else lsn
        return (base or 0, READ)
    base = commit_before if commit_before is not None else lsn
    return (base or 0, lsn or 0)
