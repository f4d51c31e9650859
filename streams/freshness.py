"""Commit-to-online latency: from the Postgres commit of a change to its online write."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from stores.sink import SinkRow


class Freshness:
    """Keeps the latest ``window`` latencies (ms) and reports percentiles."""

    def __init__(self, window: int = 20_000) -> None:
        self.samples: deque[float] = deque(maxlen=window)

    def record(self, rows: list[SinkRow], now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        self.samples.extend((now - r.event_time).total_seconds() * 1000 for r in rows if r.cdc_op != "r")

    def percentile(self, p: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def summary(self) -> str:
        p50, p99 = self.percentile(50), self.percentile(99)
        if p50 is None or p99 is None:
            return "no samples"
        return f"p50={p50:.0f}ms p99={p99:.0f}ms over {len(self.samples)} changes"
