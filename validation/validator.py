"""Validating a micro-batch with its feature view's Great Expectations suite.

One validation run covers the whole batch (a run costs ~50 ms, whatever the size), and the
result is split by row: valid rows, and invalid rows each with the expectations they failed.
Returns values; never raises for bad data.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# Great Expectations must not phone home from a stream processor.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from validation.suites import SuiteStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Failure:
    """One expectation one row failed: its type, column, arguments and the offending value."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    value: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "kwargs": self.kwargs,
            "value": _jsonable(self.value),
        }


@dataclass
class Verdict:
    """Row positions of a batch: those that passed, and those that failed with why."""

    valid: list[int] = field(default_factory=list)
    invalid: dict[int, list[Failure]] = field(default_factory=dict)


class BatchValidator:
    """Runs suites on pandas micro-batches. Constructing it builds an in-memory GX context."""

    def __init__(self, suites: SuiteStore | None = None) -> None:
        self.suites = suites or SuiteStore()
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = self._context.data_sources.add_pandas("featurectl").add_dataframe_asset("micro_batch")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    def validate(self, view: str, rows: list[dict[str, Any]]) -> Verdict:
        """Validate ``rows`` (feature values as decoded) against the suite of ``view``.

        Raises ConfigError only if the suite itself is missing or broken.
        """
        suite = self.suites.get(view)
        verdict = Verdict()
        if not rows:
            return verdict
        # object dtype keeps each value's Python type: ints with a NULL must not become floats.
        frame = pd.DataFrame(rows, dtype=object)
        failures: dict[int, list[Failure]] = defaultdict(list)
        if _types_already_fit(suite.type_checks, rows):
            # Every value has an allowed type, so the type pass cannot fail: run the whole suite as
            # one GX run (half the fixed cost).
            # object dtype again: an int column with a NULL must not turn into floats.
            self._run(suite.all_checks, frame, failures)
            verdict.invalid = dict(failures)
            verdict.valid = [i for i in range(len(rows)) if i not in failures]
            return verdict
        self._run(suite.type_checks, frame, failures)
        typed = frame.drop(index=list(failures))
        if len(typed):
            # The value pass sees well-typed columns, so let pandas infer numeric dtypes again.
            self._run(suite.value_checks, typed.infer_objects(), failures)
        verdict.invalid = dict(failures)
        verdict.valid = [i for i in range(len(rows)) if i not in failures]
        return verdict

    def _run(
        self, suite: gx.ExpectationSuite, frame: pd.DataFrame, failures: dict[int, list[Failure]]
    ) -> None:
        if not suite.expectations or frame.empty:
            return
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
        for res in result.results:
            if res.success:
                continue
            cfg = res.expectation_config
            assert cfg is not None  # every result of a suite run names its expectation
            kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
            column = kwargs.get("column")
            indices = res.result.get("unexpected_index_list")
            if indices is None:
                # A failure GX cannot attribute to rows (or an exception in the expectation):
                # the whole batch is suspect, never silently passed.
                reason = (res.exception_info or {}).get(
                    "exception_message"
                ) or "failed on the batch as a whole"
                logger.warning("expectation %s on %s: %s", cfg.type, column, reason)
                indices = list(frame.index)
            values = res.result.get("unexpected_list") or []
            for pos, idx in enumerate(indices):
                value = (
                    values[pos] if pos < len(values) else frame.at[idx, column] if column in frame else None
                )
                failures[int(idx)].append(Failure(cfg.type, column, kwargs, value))


_PY_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (float,), "str": (str,), "bool": (bool,)}


def _types_already_fit(type_checks: gx.ExpectationSuite, rows: list[dict[str, Any]]) -> bool:
    """True when every checked value's Python type is allowed (a pre-check; GX still validates)."""
    for exp in type_checks.expectations:
        allowed_names = getattr(exp, "type_list", None) or [getattr(exp, "type_", None)]
        if any(name not in _PY_TYPES for name in allowed_names):
            return False  # a type name we do not map: let GX decide in two passes
        allowed = tuple(t for name in allowed_names for t in _PY_TYPES[name])
        column = exp.column  # type: ignore[attr-defined]
        for row in rows:
            value = row.get(column)
            if value is None:
                continue
            # bool is an int subclass in Python, never an allowed int here
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                return False
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN: pandas' spelling of a NULL
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
