"""Drift scores against independent computations, and verdicts on seeded samples (monitoring/drift)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Float64, String
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from core.errors import ConfigError
from monitoring.drift import scores
from monitoring.drift.report import DRIFT, FEW, OK, SKIPPED, score_feature
from validation.drift_spec import DEFAULT_THRESHOLDS, DriftSpec, Reference, drift_spec

RNG = np.random.default_rng(20261124)
SPEC = DriftSpec("v", Reference("window", span=timedelta(days=30)), timedelta(days=1))


def _psi_by_hand(ref: np.ndarray, cur: np.ndarray, edges: list[float]) -> float:
    """PSI on fixed bins, one loop, no shared code with scores.py."""
    bounds = [-np.inf, *edges, np.inf]
    total = 0.0
    for lo, hi in itertools.pairwise(bounds):
        p = max(float(np.sum((ref > lo) & (ref <= hi))) / len(ref), 1e-4)
        q = max(float(np.sum((cur > lo) & (cur <= hi))) / len(cur), 1e-4)
        total += (q - p) * np.log(q / p)
    return total


def test_numeric_scores_equal_independent_computations() -> None:
    ref, cur = RNG.normal(100, 15, 4000), RNG.normal(110, 20, 3000)
    edges = [float(e) for e in np.quantile(ref, np.linspace(0, 1, 11)[1:-1])]
    assert scores.psi_numeric(ref, cur) == pytest.approx(_psi_by_hand(ref, cur, edges), rel=1e-9)
    d, p = scores.ks(ref, cur)
    expected = ks_2samp(ref, cur)
    assert (d, p) == pytest.approx((expected.statistic, expected.pvalue))
    assert scores.wasserstein(ref, cur) == pytest.approx(wasserstein_distance(ref, cur) / np.std(ref))


def test_categorical_scores_equal_independent_computations() -> None:
    ref = list(RNG.choice(["a", "b", "c", "d"], 3000, p=[0.4, 0.3, 0.2, 0.1]))
    cur = list(RNG.choice(["a", "b", "c", "e"], 2000, p=[0.1, 0.2, 0.3, 0.4]))
    cats = ["a", "b", "c", "d", "e"]
    p = np.array([ref.count(c) for c in cats]) / len(ref)
    q = np.array([cur.count(c) for c in cats]) / len(cur)
    assert scores.jensen_shannon(ref, cur) == pytest.approx(jensenshannon(p, q, base=2))
    pf, qf = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert scores.psi_categorical(ref, cur) == pytest.approx(float(np.sum((qf - pf) * np.log(qf / pf))))


def test_centroid_shift_and_null_share() -> None:
    a = np.array([[1.0, 0.0], [1.0, 0.2]])
    b = np.array([[0.0, 1.0], [0.2, 1.0]])
    assert scores.centroid_shift(a, a) == pytest.approx(0.0)
    assert scores.centroid_shift(a, b) == pytest.approx(1 - (0.1 + 0.1) / (np.hypot(1, 0.1) ** 2))
    assert scores.null_share_shift(10, 100, 30, 100) == pytest.approx(0.2)


def _verdicts(name: str, kind: str, ref: list[object], cur: list[object]) -> dict[str, str]:
    out = score_feature(name, kind, pa.chunked_array([ref]), pa.chunked_array([cur]), SPEC)
    return {s.metric: s.verdict for s in out}


@pytest.mark.parametrize(
    ("kind", "same", "shifted"),
    [
        ("numeric", lambda n: RNG.normal(50, 10, (n,)).tolist(), lambda n: RNG.normal(58, 10, (n,)).tolist()),
        (
            "categorical",
            lambda n: RNG.choice(["de", "fr", "us"], n, p=[0.5, 0.3, 0.2]).tolist(),
            lambda n: RNG.choice(["de", "fr", "us"], n, p=[0.2, 0.3, 0.5]).tolist(),
        ),
        (
            "vector",
            lambda n: (RNG.normal(0, 1, (n, 16)) + np.eye(16)[0] * 3).tolist(),
            lambda n: (RNG.normal(0, 1, (n, 16)) + np.eye(16)[0] * 2 + np.eye(16)[1] * 2).tolist(),
        ),
    ],
)
def test_no_drift_on_one_distribution_drift_on_a_shifted_one(kind: str, same, shifted) -> None:  # type: ignore[no-untyped-def]
    calm = _verdicts("f", kind, same(3000), same(3000))
    assert set(calm.values()) == {OK}, calm
    moved = _verdicts("f", kind, same(3000), shifted(3000))
    assert DRIFT in moved.values(), moved


def test_nulls_drift_on_their_own() -> None:
    values = RNG.normal(0, 1, 2000).tolist()
    holed = [None if i % 4 == 0 else v for i, v in enumerate(RNG.normal(0, 1, 2000).tolist())]
    verdicts = _verdicts("f", "numeric", values, holed)
    assert verdicts["null_share"] == DRIFT
    assert verdicts["ks"] == OK  # the values that are there did not move


def test_an_identifier_like_category_is_not_scored() -> None:
    hashes = [f"h{i}" for i in range(500)]
    assert _verdicts("email", "categorical", hashes[:250], hashes[250:]) == {"null_share": OK, "-": SKIPPED}


def test_too_few_rows_is_no_verdict() -> None:
    assert _verdicts("f", "numeric", [1.0] * 5, [9.0] * 5) == {"-": FEW}


def _view(tags: dict[str, str]) -> FeatureView:
    return FeatureView(
        name="v",
        entities=[Entity(name="e", join_keys=["id"], value_type=ValueType.INT64)],
        ttl=timedelta(0),
        schema=[
            Field(name="x", dtype=Float64),
            Field(name="s", dtype=String),
            Field(name="emb", dtype=Array(Float32)),
        ],
        source=FileSource(path="h", timestamp_field="event_timestamp"),
        tags=tags,
    )


def test_spec_reads_tags_and_names_bad_ones() -> None:
    spec = drift_spec(
        _view({"drift.reference": "training:jan", "drift.threshold.psi": "0.3", "drift.window": "6h"})
    )
    assert spec.reference == Reference("training", dataset="jan")
    assert spec.window == timedelta(hours=6)
    assert spec.thresholds == {**DEFAULT_THRESHOLDS, "psi": 0.3}
    assert drift_spec(_view({})).reference == Reference("window", span=timedelta(days=30))
    for tags, named in [
        ({"drift.reference": "yesterday"}, "drift.reference='yesterday'"),
        ({"drift.threshold.psii": "0.1"}, "drift.threshold.psii is unknown"),
        ({"drift.threshold.ks": "high"}, "is not a number"),
        ({"drift.window": "1 fortnight"}, "not understood"),
        ({"drift.min_rows": "1"}, "not a row count"),
    ]:
        with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(".", r"\.")):
            drift_spec(_view(tags))
