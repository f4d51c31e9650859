"""Drift statistics between a reference sample and a current sample of one feature.

Each function takes the two samples (non-null values only; nulls are scored by ``null_share_shift``) and
returns a score where 0 means "the same". Conventions follow the tools users already know:

- ``psi``: population stability index, sum((q - p) * ln(q / p)) over bins, with empty bins floored at
  ``PSI_FLOOR`` so one empty bin does not make it infinite (the usual reading: < 0.1 stable, 0.1-0.25
  moderate, > 0.25 a shift). Numbers are binned on the reference's deciles (``quantile_edges``), so each
  reference bin holds about a tenth of it; categories are their own bins.
- ``jensen_shannon``: Jensen-Shannon *distance* in base 2 (scipy's ``jensenshannon``), in [0, 1].
- ``ks``: the two-sample Kolmogorov-Smirnov statistic D (scipy's ``ks_2samp``), with its p-value.
- ``wasserstein``: scipy's ``wasserstein_distance`` divided by the reference's standard deviation, so a
  threshold reads "in reference standard deviations" whatever the unit (Evidently's normed Wasserstein).
- ``null_share_shift``: |current null share - reference null share|.
- ``centroid_shift``: 1 - cosine(reference centroid, current centroid) of two sets of vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

PSI_FLOOR = 1e-4  # share given to an empty bin
PSI_BINS = 10


def _shares(counts: ArrayLike) -> NDArray[np.float64]:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else np.full_like(c, 1.0 / max(len(c), 1))


def psi_of_counts(reference: ArrayLike, current: ArrayLike) -> float:
    """PSI of two count vectors over the same bins."""
    p = np.maximum(_shares(reference), PSI_FLOOR)
    q = np.maximum(_shares(current), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def quantile_edges(reference: ArrayLike, bins: int = PSI_BINS) -> NDArray[np.float64]:
    """Inner bin edges at the reference's quantiles (duplicates merged: a discrete feature has fewer bins)."""
    ref = np.asarray(reference, dtype=np.float64)
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def binned(values: ArrayLike, edges: NDArray[np.float64]) -> NDArray[np.int64]:
    """Counts of ``values`` in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    index = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def psi_numeric(reference: ArrayLike, current: ArrayLike, bins: int = PSI_BINS) -> float:
    edges = quantile_edges(reference, bins)
    return psi_of_counts(binned(reference, edges), binned(current, edges))


def category_counts(
    reference: Sequence[object], current: Sequence[object]
) -> tuple[list[object], NDArray[np.int64], NDArray[np.int64]]:
    """The union of categories (most frequent in the reference first) and each sample's counts over it."""
    ref_values, ref_counts = np.unique(np.asarray(reference, dtype=object).astype(str), return_counts=True)
    cur_values, cur_counts = np.unique(np.asarray(current, dtype=object).astype(str), return_counts=True)
    ref_map = dict(zip(ref_values.tolist(), ref_counts.tolist(), strict=True))
    cur_map = dict(zip(cur_values.tolist(), cur_counts.tolist(), strict=True))
    order = sorted(set(ref_map) | set(cur_map), key=lambda v: (-ref_map.get(v, 0), -cur_map.get(v, 0), v))
    return (
        list(order),
        np.array([ref_map.get(v, 0) for v in order], dtype=np.int64),
        np.array([cur_map.get(v, 0) for v in order], dtype=np.int64),
    )


def psi_categorical(reference: Sequence[object], current: Sequence[object]) -> float:
    _, ref, cur = category_counts(reference, current)
    return psi_of_counts(ref, cur)


def jensen_shannon(reference: Sequence[object], current: Sequence[object]) -> float:
    _, ref, cur = category_counts(reference, current)
    return float(jensenshannon(_shares(ref), _shares(cur), base=2))


def ks(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """(D, p-value) of the two-sample Kolmogorov-Smirnov test."""
    result = ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def wasserstein(reference: ArrayLike, current: ArrayLike) -> float:
    """Earth mover's distance in reference standard deviations (in raw units if the reference is constant)."""
    ref = np.asarray(reference, dtype=np.float64)
    distance = float(wasserstein_distance(ref, np.asarray(current, dtype=np.float64)))
    scale = float(np.std(ref))
    return distance / scale if scale > 0 else distance


def null_share_shift(
    reference_nulls: int, reference_rows: int, current_nulls: int, current_rows: int
) -> float:
    ref = reference_nulls / reference_rows if reference_rows else 0.0
    cur = current_nulls / current_rows if current_rows else 0.0
    return abs(cur - ref)


def centroid_shift(reference: ArrayLike, current: ArrayLike) -> float:
    """1 - cosine similarity of the two samples' mean vectors (rows are vectors)."""
    a = np.asarray(reference, dtype=np.float64).mean(axis=0)
    b = np.asarray(current, dtype=np.float64).mean(axis=0)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 0.0 if not (a.any() or b.any()) else 1.0
    return float(1.0 - np.dot(a, b) / norms)
