"""Validating a micro-batch with its feature view's Great Expectations suite.

The common column-map expectations run compiled (validation/compiled.py: the pandas expressions GX
itself evaluates, without GX's ~50 ms of machinery per run); the rest of a suite, and any expectation
a batch makes the compiled form hand back, runs through GX in one run for the whole batch. The result
is split by row: valid rows, and invalid rows each with the expectations they failed.
Returns values; never raises for bad data.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Great Expectations must not phone home from a stream processor.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx
import numpy as np
import pandas as pd
from feast.types import FeastType
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation import Expectation

from validation import feature_types
from validation.compiled import ColumnCache, CompiledCheck, Fallback, compile_expectation
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


def describe(failures: Sequence[Failure]) -> str:
    """A dead letter's reason: the expectations a row failed; for a value that does not fit its feature's
    type, also why and the fix."""
    names = ", ".join(sorted({f"{f.expectation}({f.column})" for f in failures}))
    misfits = [
        f"{f.column}: {f.kwargs['why']}; fix: {f.kwargs['fix']}"
        for f in failures
        if f.expectation == feature_types.EXPECTATION
    ]
    return f"failed expectations: {names}" + "".join(f"\n  {m}" for m in misfits)


class BatchValidator:
    """Runs suites on pandas micro-batches. Constructing it builds an in-memory GX context."""

    def __init__(self, suites: SuiteStore | None = None, compiled: bool = True) -> None:
        self.suites = suites or SuiteStore()
        self.compiled = compiled  # False: every expectation through GX (the oracle, for comparisons)
        # Keyed by id(); the entry keeps its expectation, so a recycled id is recognised as stale.
        self._checks: dict[int, tuple[Expectation, CompiledCheck | None]] = {}
        self._gx_suites: dict[tuple[int, ...], tuple[list[Expectation], gx.ExpectationSuite]] = {}
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = self._context.data_sources.add_pandas("featurectl").add_dataframe_asset("micro_batch")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    def validate(
        self, view: str, rows: list[dict[str, Any]], features: Sequence[tuple[str, FeastType]] = ()
    ) -> Verdict:
        """Validate ``rows`` (feature values as decoded) against the suite of ``view``, and first each value
        of ``features`` (name, declared type) against its type (validation/feature_types.py): a row whose
        value does not fit fails ``fits_feature_type`` and skips the suite.

        Raises ConfigError only if the suite itself is missing or broken.
        """
        suite = self.suites.get(view)
        misfit = feature_types.misfits(rows, features) if features else {}
        if misfit:
            fitting = [i for i in range(len(rows)) if i not in misfit]
            inner = self.validate(view, [rows[i] for i in fitting])
            return Verdict(
                valid=[fitting[j] for j in inner.valid],
                invalid={
                    **{
                        i: [
                            Failure(feature_types.EXPECTATION, name, {"why": why, "fix": fix}, value)
                            for name, why, fix, value in found
                        ]
                        for i, found in misfit.items()
                    },
                    **{fitting[j]: failures for j, failures in inner.invalid.items()},
                },
            )
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
            checks = suite.all_checks
            if self.compiled and all(
                getattr(e, "column", None) in frame.columns for e in suite.type_checks.expectations
            ):
                # Each value is an instance of a type GX accepts for its column (a subset of GX's
                # mapping), so GX passes every type expectation on every row: only values can fail.
                checks = suite.value_checks
            self._run(checks, frame, failures)
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
        if not self.compiled:
            self._run_gx(suite, frame, failures)
            return
        rest: list[Expectation] = []
        columns = ColumnCache(frame)
        for exp in suite.expectations:
            check = self._check(exp)
            try:
                if check is None:
                    raise Fallback("not compiled")
                outcome = check.evaluate(columns)
            except Fallback:
                rest.append(exp)
                continue
            if outcome.success:
                continue
            kwargs = {
                k: v for k, v in exp.configuration.kwargs.items() if k not in ("batch_id", "result_format")
            }
            for idx in outcome.unexpected:
                value = frame.at[idx, check.column]
                value = value.item() if isinstance(value, np.generic) else value
                failures[int(idx)].append(Failure(exp.expectation_type, check.column, kwargs, value))
        if rest:
            self._run_gx(self._gx_suite(suite.name, rest), frame, failures)

    def _check(self, exp: Expectation) -> CompiledCheck | None:
        cached = self._checks.get(id(exp))
        if cached is None or cached[0] is not exp:
            cached = (exp, compile_expectation(exp))
            self._checks[id(exp)] = cached
        return cached[1]

    def _gx_suite(self, name: str, expectations: list[Expectation]) -> gx.ExpectationSuite:
        """A GX suite of copies of ``expectations`` (a suite owns its expectation objects), cached."""
        key = tuple(id(e) for e in expectations)
        cached = self._gx_suites.get(key)
        if cached is None or any(a is not b for a, b in zip(cached[0], expectations, strict=True)):
            copies = [type(e)(**e.configuration.kwargs, meta=e.meta) for e in expectations]
            cached = (list(expectations), gx.ExpectationSuite(name=f"{name}.gx", expectations=copies))
            self._gx_suites[key] = cached
        return cached[1]

    def _run_gx(
        self, suite: gx.ExpectationSuite, frame: pd.DataFrame, failures: dict[int, list[Failure]]
    ) -> None:
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
