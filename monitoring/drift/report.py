"""A view's drift check: each feature's scores against its thresholds, and what is done with them.

A feature is scored by its type: numbers (ints, floats, timestamps as epoch seconds) by PSI on the
reference's deciles, KS and normed Wasserstein; categories (strings, booleans) by PSI and
Jensen-Shannon (unless identifier-like: more distinct values than ``IDENTIFIER_SHARE`` of the
reference's rows, such as a hashed e-mail, which is listed as not scored); vectors (arrays of floats: embeddings) by the centroid shift; every feature by the shift
of its null share. A feature drifts when any of its scores passes its threshold (KS only where its
p-value is also below ``spec.KS_ALPHA``). A side with fewer than ``min_rows`` non-null values gives the
verdict "too few rows" (not drift: nothing to compare). Other types (bytes, string lists) are listed as
not scored.

Each run's verdicts are exported as metrics (``featurectl_feature_drift`` and friends) and kept in
``<data_dir>/drift/last.json`` for ``featurectl health``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView
from feast.types import Array, FeastType, PrimitiveFeastType

from core import metrics
from monitoring.drift import samples, scores
from validation.drift_spec import KS_ALPHA, DriftSpec

DRIFT, OK, FEW, SKIPPED = "drift", "ok", "too few rows", "not scored"
_NUMERIC = {"INT32", "INT64", "FLOAT32", "FLOAT64", "UNIX_TIMESTAMP"}
_CATEGORICAL = {"STRING", "BOOL"}
IDENTIFIER_SHARE = 0.5  # a category feature with more distinct values than this share of its rows


@dataclass(frozen=True, slots=True)
class Score:
    feature: str
    metric: str
    score: float | None
    threshold: float | None
    verdict: str  # drift, ok, too few rows, not scored
    detail: str = ""


@dataclass
class ViewDrift:
    view: str
    reference: str
    window_start: str
    window_end: str
    reference_rows: int
    current_rows: int
    scores: list[Score] = field(default_factory=list)
    null_ratio: dict[str, float] = field(default_factory=dict)  # the current window's, per feature
    kinds: dict[str, str] = field(default_factory=dict)  # feature -> numeric, categorical or vector

    @property
    def drifting(self) -> list[str]:
        """The features with at least one score past its threshold, in declaration order."""
        return list(dict.fromkeys(s.feature for s in self.scores if s.verdict == DRIFT))


def kind_of(dtype: FeastType) -> str | None:
    """numeric, categorical, vector, or None (not scored)."""
    if isinstance(dtype, Array):
        base = dtype.base_type
        return (
            "vector" if isinstance(base, PrimitiveFeastType) and base.name in ("FLOAT32", "FLOAT64") else None
        )
    name = dtype.name if isinstance(dtype, PrimitiveFeastType) else ""
    return "numeric" if name in _NUMERIC else "categorical" if name in _CATEGORICAL else None


def numbers(column: pa.Array) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        column = pc.divide(pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64()), 1_000_000)
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values[np.isfinite(values)]  # NaN is missing (Feast keeps float NaN as null)


def _check(
    feature: str, metric: str, value: float, spec: DriftSpec, detail: str = "", passes: bool = True
) -> Score:
    threshold = spec.thresholds[metric]
    verdict = DRIFT if value > threshold and passes else OK
    return Score(feature, metric, value, threshold, verdict, detail)


def score_feature(
    name: str, kind: str, ref: pa.ChunkedArray, cur: pa.ChunkedArray, spec: DriftSpec
) -> list[Score]:
    """Every score of one feature, nulls included."""
    ref_values, cur_values = samples.non_null(ref), samples.non_null(cur)
    out = (
        [
            _check(
                name,
                "null_share",
                scores.null_share_shift(ref.null_count, len(ref), cur.null_count, len(cur)),
                spec,
                f"{_share(ref.null_count, len(ref))} -> {_share(cur.null_count, len(cur))} null",
            )
        ]
        if len(ref) >= spec.min_rows and len(cur) >= spec.min_rows
        else []
    )
    if kind == "numeric":
        a, b = numbers(ref_values), numbers(cur_values)
        if min(len(a), len(b)) < spec.min_rows:
            return [*out, _few(name, len(a), len(b), spec)]
        d, p = scores.ks(a, b)
        return [
            *out,
            _check(name, "psi", scores.psi_numeric(a, b), spec, f"mean {np.mean(a):.4g} -> {np.mean(b):.4g}"),
            _check(name, "ks", d, spec, f"p={p:.2g}", passes=p < KS_ALPHA),
            _check(name, "wasserstein", scores.wasserstein(a, b), spec, "in reference std devs"),
        ]
    if kind == "categorical":
        a_list, b_list = ref_values.to_pylist(), cur_values.to_pylist()
        if min(len(a_list), len(b_list)) < spec.min_rows:
            return [*out, _few(name, len(a_list), len(b_list), spec)]
        distinct = len(set(a_list))
        if distinct > IDENTIFIER_SHARE * len(a_list):
            # An e-mail hash or an id: nearly every value is new, so any two windows "differ" entirely.
            detail = (
                f"{distinct} distinct in {len(a_list)} reference values: an identifier, not a distribution"
            )
            return [*out, Score(name, "-", None, None, SKIPPED, detail)]
        return [
            *out,
            _check(name, "psi", scores.psi_categorical(a_list, b_list), spec),
            _check(name, "jensen_shannon", scores.jensen_shannon(a_list, b_list), spec),
        ]
    if kind == "vector":
        a_vec, b_vec = vectors(ref_values), vectors(cur_values)
        if min(len(a_vec), len(b_vec)) < spec.min_rows:
            return [*out, _few(name, len(a_vec), len(b_vec), spec)]
        return [*out, _check(name, "centroid_shift", scores.centroid_shift(a_vec, b_vec), spec)]
    return [Score(name, "-", None, None, SKIPPED, "no drift metric for this type")]


def vectors(column: pa.Array) -> np.ndarray:
    rows = [v for v in column.to_pylist() if v]
    if not rows:
        return np.empty((0, 0))
    width = max(len(v) for v in rows)
    return np.asarray([v for v in rows if len(v) == width], dtype=np.float64)


def _few(name: str, ref: int, cur: int, spec: DriftSpec) -> Score:
    return Score(name, "-", None, None, FEW, f"{ref} reference / {cur} current values, need {spec.min_rows}")


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def check_view(
    store: FeatureStore, view: FeatureView, spec: DriftSpec, end: datetime
) -> tuple[ViewDrift, samples.Sample, samples.Sample]:
    """Score every feature of ``view``: the current window ending at ``end`` against the reference.

    Returns the report, the reference sample and the current sample (for pictures)."""
    cur = samples.current(store, view, end, spec.window)
    assert cur.start is not None
    ref = samples.reference(store, view, spec, cur.start)
    report = ViewDrift(
        view.name, ref.source, cur.start.isoformat(), end.isoformat(), ref.num_rows, cur.num_rows
    )
    for feature in view.features:
        if feature.name in cur.rows.column_names and cur.num_rows:
            report.null_ratio[feature.name] = cur.rows.column(feature.name).null_count / cur.num_rows
        kind = kind_of(feature.dtype)
        if kind is not None:
            report.kinds[feature.name] = kind
        if feature.name not in ref.rows.column_names:
            report.scores.append(Score(feature.name, "-", None, None, SKIPPED, "not in the reference"))
        elif kind is None:
            report.scores.append(
                Score(feature.name, "-", None, None, SKIPPED, f"no drift metric for {feature.dtype}")
            )
        else:
            report.scores += score_feature(
                feature.name, kind, ref.rows.column(feature.name), cur.rows.column(feature.name), spec
            )
    return report, ref, cur


def export(report: ViewDrift) -> None:
    """The report as Prometheus gauges (one series per view, feature and metric)."""
    for s in report.scores:
        if s.score is not None and math.isfinite(s.score):
            metrics.FEATURE_DRIFT.labels(report.view, s.feature, s.metric).set(s.score)
    for feature in {s.feature for s in report.scores}:
        metrics.FEATURE_DRIFTING.labels(report.view, feature).set(1 if feature in report.drifting else 0)
    for name, share in report.null_ratio.items():
        metrics.FEATURE_NULL_RATIO.labels(report.view, name).set(share)
    metrics.DRIFT_ROWS.labels(report.view, "current").set(report.current_rows)
    metrics.DRIFT_ROWS.labels(report.view, "reference").set(report.reference_rows)
    metrics.DRIFT_CHECKED.labels(report.view).set(time.time())


def last_file(data_dir: Path) -> Path:
    return data_dir / "drift" / "last.json"


def save_last(data_dir: Path, reports: list[ViewDrift]) -> None:
    """Keep each view's latest verdict (other views' entries stay), replaced atomically."""
    from monitoring import last_verdicts

    now = time.time()
    last_verdicts.save(
        last_file(data_dir),
        {r.view: {"checked_at": now, "drifting": r.drifting, "window_end": r.window_end} for r in reports},
    )


def load_last(data_dir: Path) -> dict[str, dict[str, Any]]:
    from monitoring import last_verdicts

    return last_verdicts.load(last_file(data_dir))


def as_json(reports: list[ViewDrift]) -> str:
    return json.dumps([asdict(r) | {"drifting": r.drifting} for r in reports], indent=1)


def as_table(report: ViewDrift) -> list[str]:
    """The human table of one view: feature, metric, score, threshold, verdict."""
    head = (
        f"{report.view}: {report.current_rows} changes in [{report.window_start}, {report.window_end}) "
        f"against {report.reference} ({report.reference_rows} changes)"
    )
    lines = [head, f"  {'feature':<24} {'metric':<15} {'score':>9} {'threshold':>9}  verdict"]
    for s in report.scores:
        score = "-" if s.score is None else f"{s.score:.4f}"
        threshold = "-" if s.threshold is None else f"{s.threshold:g}"
        detail = f"  ({s.detail})" if s.detail else ""
        lines.append(
            f"  {s.feature:<24} {s.metric:<15} {score:>9} {threshold:>9}  {s.verdict.upper() if s.verdict == DRIFT else s.verdict}{detail}"
        )
    verdict = f"DRIFT in {', '.join(report.drifting)}" if report.drifting else "no drift"
    lines.append(f"  -> {verdict}")
    return lines
