"""The incremental, retractable state behind aggregation features: exact by construction.

Per aggregation key, the live row versions (semantics.py) with their event times and aggregated values;
per source row, the version last applied and the key it counts under. A change:

- older than (or equal to) the row's applied version is ignored: duplicates, snapshot re-reads and replays
  never count twice;
- otherwise it retracts the row's previous contribution, wherever it was (the row's old key: an update that
  moves an order to another customer leaves the first one's values), and adds the new image's, unless it is
  a delete.

Values are computed when read, over the rows of the key inside the window ending at the read time, so a
window that slides past old rows drops them with no new change, and min, max, count_distinct and last(k)
stay exact under deletes (no running extreme to invalidate). ``evict`` drops contributions no window can
reach any more: a key's state is bounded by its rows within the longest window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aggregations.semantics import Change, Contribution, Version, compute, in_window
from aggregations.spec import Aggregation


@dataclass
class _Row:
    version: Version
    key: Any  # the key it counts under, None when deleted (or evicted)


@dataclass
class AggregationState:
    """Live row versions per aggregation key, and the version applied per source row."""

    rows: dict[tuple[Any, ...], _Row] = field(default_factory=dict)
    by_key: dict[Any, dict[tuple[Any, ...], Contribution]] = field(default_factory=dict)

    def apply(self, change: Change) -> bool:
        """Apply one change; False when it is not newer than what the row holds (nothing changes)."""
        held = self.rows.get(change.row)
        if held is not None and change.version <= held.version:
            return False
        if held is not None and held.key is not None:
            live = self.by_key.get(held.key)
            if live is not None:
                live.pop(change.row, None)
                if not live:
                    del self.by_key[held.key]
        if change.deleted or change.event_time is None:
            self.rows[change.row] = _Row(change.version, None)
            return True
        self.rows[change.row] = _Row(change.version, change.key)
        self.by_key.setdefault(change.key, {})[change.row] = Contribution(
            change.row, change.version, change.event_time, dict(change.values)
        )
        return True

    def value(self, key: Any, agg: Aggregation, at: datetime) -> Any:
        """``agg`` for ``key`` at ``at``, over what has been applied (changes committed by ``at``)."""
        rows = [r for r in self.by_key.get(key, {}).values() if in_window(r.event_time, at, agg)]
        return compute(agg, rows)

    def keys(self) -> list[Any]:
        return list(self.by_key)

    def evict(self, now: datetime, longest: timedelta) -> int:
        """Drop the contributions no window ending at ``now`` or later can hold (event time <= now - longest);
        the rows' versions stay, so a replayed older change is still refused. Returns how many were dropped."""
        dropped = 0
        for key in list(self.by_key):
            live = self.by_key[key]
            for row, contribution in list(live.items()):
                if contribution.event_time <= now - longest:
                    del live[row]
                    self.rows[row].key = None
                    dropped += 1
            if not live:
                del self.by_key[key]
        return dropped
