"""What a feature view declares about its drift check, in its Feast tags (checked by ``feast-apply``;
scored by monitoring/drift/).

    tags={
        "drift.reference": "window:30d",      # or "baseline", or "training:<saved dataset>"
        "drift.window": "1d",                 # the current window, ending now (``--window`` overrides)
        "drift.threshold.psi": "0.25",        # any metric of METRICS; unset ones keep DEFAULT_THRESHOLDS
        "drift.min_rows": "50",               # fewer rows on either side: "too few rows", not a verdict
    }

References:
- ``window:<duration>``: the rows of the ``duration`` just before the current window (a rolling
  reference, Hopsworks' default). The default when a view declares nothing: ``window:30d``.
- ``baseline``: the rows Feast's monitoring baseline was computed over (``feast monitor run
  --set-baseline``: every row up to the baseline's ``max_event_timestamp``), before the current window.
- ``training:<name>``: the rows of a Feast saved dataset (``store.create_saved_dataset``), i.e. what a
  model was trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from feast import FeatureView

from core.errors import ConfigError

PREFIX = "drift."
METRICS = ("psi", "ks", "wasserstein", "jensen_shannon", "null_share", "centroid_shift")
DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi": 0.2,  # "significant" above 0.25 by the usual reading; 0.2 flags it a little earlier
    "ks": 0.1,  # D, and only where its p-value is below KS_ALPHA (large samples make tiny D significant)
    "wasserstein": 0.1,  # in reference standard deviations (Evidently's default threshold)
    "jensen_shannon": 0.1,  # Evidently's default
    "null_share": 0.1,  # ten points more (or fewer) nulls
    "centroid_shift": 0.05,  # 1 - cosine of the mean vectors
}
KS_ALPHA = 0.05
DEFAULT_REFERENCE = "window:30d"
DEFAULT_WINDOW = "1d"
DEFAULT_MIN_ROWS = 30
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, what: str) -> timedelta:
    """'90s', '15m', '1h', '30d', '2w' -> timedelta; anything else is a ConfigError naming ``what``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"{what}: duration {text!r} is not understood", "write it as <number><s|m|h|d|w>, e.g. 30d"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Reference:
    kind: str  # "window", "baseline" or "training"
    span: timedelta | None = None  # window: its length
    dataset: str | None = None  # training: the saved dataset's name

    def __str__(self) -> str:
        if self.kind == "window":
            assert self.span is not None
            return f"the {_human(self.span)} before the window"
        if self.kind == "training":
            return f"saved dataset {self.dataset}"
        return "Feast's monitoring baseline"


def _human(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class DriftSpec:
    view: str
    reference: Reference
    window: timedelta
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    min_rows: int = DEFAULT_MIN_ROWS


def parse_reference(view: str, text: str) -> Reference:
    kind, _, arg = text.strip().partition(":")
    if kind == "baseline" and not arg:
        return Reference("baseline")
    if kind == "training" and arg:
        return Reference("training", dataset=arg.strip())
    if kind == "window" and arg:
        return Reference("window", span=parse_duration(arg, f"feature view {view}: tag drift.reference"))
    raise ConfigError(
        f"feature view {view}: tag drift.reference={text!r} is not a reference",
        "use baseline, training:<saved dataset> or window:<duration> (e.g. window:30d)",
    )


def drift_spec(view: FeatureView) -> DriftSpec:
    """The view's drift declaration, defaults filled in; a ConfigError names a malformed or unknown tag."""
    tags = {k[len(PREFIX) :]: v for k, v in view.tags.items() if k.startswith(PREFIX)}
    thresholds = dict(DEFAULT_THRESHOLDS)
    for key, value in tags.items():
        if key in ("reference", "window", "min_rows"):
            continue
        metric = key.removeprefix("threshold.")
        if not key.startswith("threshold.") or metric not in METRICS:
            raise ConfigError(
                f"feature view {view.name}: tag {PREFIX}{key} is unknown",
                f"use drift.reference, drift.window, drift.min_rows or drift.threshold.<{'|'.join(METRICS)}>",
            )
        try:
            thresholds[metric] = float(value)
        except ValueError:
            raise ConfigError(
                f"feature view {view.name}: tag {PREFIX}{key}={value!r} is not a number",
                "write it as e.g. 0.2",
            ) from None
    min_rows = tags.get("min_rows", str(DEFAULT_MIN_ROWS))
    if not min_rows.isdigit() or int(min_rows) < 2:
        raise ConfigError(
            f"feature view {view.name}: tag drift.min_rows={min_rows!r} is not a row count",
            "write an integer >= 2",
        )
    return DriftSpec(
        view=view.name,
        reference=parse_reference(view.name, tags.get("reference", DEFAULT_REFERENCE)),
        window=parse_duration(
            tags.get("window", DEFAULT_WINDOW), f"feature view {view.name}: tag drift.window"
        ),
        thresholds=thresholds,
        min_rows=int(min_rows),
    )
