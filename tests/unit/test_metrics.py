"""core/metrics.py's bulk observe is exactly a loop of Histogram.observe (it uses prometheus-client's
bucket values directly, so a client release that changes them must fail here)."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, Histogram

from core import metrics


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name.rsplit("_", 1)[-1], s.labels.get("le", "")): s.value
        for family in histogram.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_counts_every_value_in_the_bucket_observe_would() -> None:
    registry = CollectorRegistry()
    buckets = (0.025, 0.05, 0.1, 1.0)
    one, many = (
        Histogram(f"h_{uuid.uuid4().hex}", "test", ["view"], buckets=buckets, registry=registry)
        for _ in range(2)
    )
    # On a bound, between bounds, below the first, past the last, zero, repeated values.
    values = [0.0, 0.025, 0.03, 0.05, 0.05, 0.07, 0.1, 0.5, 1.0, 1.5, 300.0, 0.01]
    for value in values:
        one.labels("v").observe(value)
    metrics.observe_many(many.labels("v"), values)
    metrics.observe_many(many.labels("v"), [])  # nothing observed: nothing changes
    assert _samples(many) == _samples(one)
    assert _samples(many)[("count", "")] == len(values)
    assert _samples(many)[("bucket", "+Inf")] == len(values)
