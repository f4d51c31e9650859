"""Expectations run as pandas column operations with Great Expectations' own semantics.

GX suites stay the source of truth; this module only runs the common column-map expectations without
GX's machinery (its ~50 ms per validation run go to building a metric graph and result objects, not to
the checks). Each compiled check is the expression GX's pandas engine evaluates for that expectation
(great_expectations/expectations/metrics/column_map_metrics/), applied to the same Series:

- map expectations drop the column's nulls first (pandas ``notnull``: None, NaN, NaT), then evaluate;
  ``mostly`` compares ``(non-null - unexpected) / non-null`` with GX's float arithmetic, and a column
  with no non-null value passes; ``not_null`` counts over all rows and passes on an empty batch;
- ``in_set`` is ``Series.isin`` (so 1.0 is in {1}); ``match_regex`` is ``astype(str).str.contains``
  (a search with Python's ``re``, exactly GX's engine, so no regex needs a fallback);
- ``between`` is vectorised for int64/float64 columns and per value (GX's own rules) for object ones;
- type checks use GX's mapping of type names (numpy dtype type, pandas type, native type) per value.

Why pandas, not pyarrow.compute or polars: the oracle *is* a set of pandas expressions. Running the same
ones gives GX's verdict by construction (NaN as missing, Python regexes, numeric coercion in ``isin``,
mixed-type object columns), where Arrow would need each rule re-created (RE2 regexes, NaN as a value,
no mixed-type columns). The checks cost tens of microseconds per column per batch.

Anything not compiled (another expectation type, ``row_condition``, ``windows``, a datetime column under
``between`` or ``not_in_set``, a value GX's own code would raise on) returns None from ``compile`` or
raises ``Fallback`` from ``evaluate``: the validator runs that expectation through GX itself, so every
suite keeps working. tests/unit/test_compiled_vs_gx.py holds the two to the same verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.type_comparison import native_type_type_map


class Fallback(Exception):
    """This expectation, on this batch, must run through GX itself."""


Condition = Callable[[pd.Series], pd.Series]  # non-null values -> True where the value is expected


@dataclass(frozen=True)
class Outcome:
    """What GX reports for one expectation on one batch: success and the unexpected row labels."""

    success: bool
    unexpected: list[Any]


class ColumnCache:
    """A batch's columns split once into null mask and non-null values, shared by the checks of a column."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._split: dict[str, tuple[pd.Series, np.ndarray, pd.Series]] = {}

    def split(self, column: str) -> tuple[pd.Series, np.ndarray, pd.Series]:
        """(the column, its nulls as pandas' ``isnull`` sees them, its non-null values)."""
        found = self._split.get(column)
        if found is None:
            if column not in self.frame.columns:
                raise Fallback(f"no column {column}")  # GX reports the missing column its own way
            series = self.frame[column]
            nulls = series.isnull().to_numpy()
            found = (series, nulls, series[~nulls])
            self._split[column] = found
        return found


@dataclass(frozen=True)
class CompiledCheck:
    expectation: Expectation
    column: str
    mostly: float
    condition: Condition | None  # None: not_null, which counts over all rows

    def evaluate(self, batch: pd.DataFrame | ColumnCache) -> Outcome:
        columns = batch if isinstance(batch, ColumnCache) else ColumnCache(batch)
        series, nulls, present = columns.split(self.column)
        total = len(series)
        if self.condition is None:
            unexpected = list(series.index[nulls])
            success = total == 0 or (total - len(unexpected)) / total >= self.mostly
            return Outcome(bool(success), unexpected)
        if len(present) == 0:
            return Outcome(True, [])
        try:
            expected = self.condition(present)
        except (TypeError, ValueError) as exc:  # GX would report an exception for the batch: let it
            raise Fallback(str(exc)) from None
        mask = np.asarray(expected, dtype=object)
        # A condition yielding NA for a value (pandas' three-valued logic) is not "expected" to GX either.
        bad = np.array([m is not True and m is not np.True_ for m in mask], dtype=bool)
        unexpected = list(present.index[bad])
        nonnull = len(present)
        success = float(nonnull - len(unexpected)) / float(nonnull) >= self.mostly
        return Outcome(bool(success), unexpected)


def compile_expectation(exp: Expectation) -> CompiledCheck | None:
    """The compiled form of ``exp``, or None if it must always run through GX."""
    if getattr(exp, "row_condition", None) or getattr(exp, "windows", None):
        return None
    build = _BUILDERS.get(exp.expectation_type)
    column = getattr(exp, "column", None)
    if build is None or not isinstance(column, str):
        return None
    condition = build(exp)
    if condition is _NOT_COMPILED:
        return None
    mostly = getattr(exp, "mostly", 1.0)
    return CompiledCheck(exp, column, 1.0 if mostly is None else float(mostly), condition)


def _not_compiled(_series: pd.Series) -> pd.Series:
    raise Fallback("not compiled")


_NOT_COMPILED: Condition = _not_compiled


def _not_null(_exp: Any) -> Condition | None:
    return None


def _in_set(exp: Any) -> Condition:
    values = exp.value_set
    if values is None:
        return lambda s: pd.Series(True, index=s.index)
    return lambda s: s.isin(values)


def _not_in_set(exp: Any) -> Condition:
    values = exp.value_set
    if values is None:
        return lambda s: pd.Series(True, index=s.index)

    def check(s: pd.Series) -> pd.Series:
        if pd.api.types.is_datetime64_any_dtype(s):
            raise Fallback("datetime column: GX parses the value set")
        return ~s.isin(values)

    return check


def _regex(exp: Any, negate: bool) -> Condition:
    regex = exp.regex
    try:
        re.compile(regex)
    except (re.error, TypeError):
        return _NOT_COMPILED  # GX reports the bad pattern

    def check(s: pd.Series) -> pd.Series:
        found = s.astype(str).str.contains(regex)
        return ~found if negate else found

    return check


def _unique(_exp: Any) -> Condition:
    return lambda s: ~s.duplicated(keep=False)


def _between(exp: Any) -> Condition:
    lo, hi, strict_lo, strict_hi = exp.min_value, exp.max_value, exp.strict_min, exp.strict_max
    if lo is None and hi is None:
        return _NOT_COMPILED
    if lo is not None and hi is not None and lo > hi:
        return _NOT_COMPILED
    if isinstance(lo, dict) or isinstance(hi, dict):  # evaluation parameters: GX resolves them
        return _NOT_COMPILED

    def vectorised(s: pd.Series) -> pd.Series:
        if lo is None:
            return s < hi if strict_hi else s <= hi
        if hi is None:
            return lo < s if strict_lo else lo <= s
        low = (lo < s) if strict_lo else (lo <= s)
        high = (s < hi) if strict_hi else (s <= hi)
        return low & high

    def one(val: Any) -> bool:
        # GX's is_between (column_values_between.py), value by value, for non-numeric dtypes.
        for bound in (lo, hi):
            if bound is not None and isinstance(val, str) != isinstance(bound, str):
                raise TypeError(
                    "Column values, min_value, and max_value must either be None or of the same type."
                )
        if lo is not None and hi is not None:
            if strict_lo and strict_hi:
                return bool((val > lo) and (val < hi))
            if strict_lo:
                return bool((val > lo) and (val <= hi))
            if strict_hi:
                return bool((val >= lo) and (val < hi))
            return bool((val >= lo) and (val <= hi))
        if hi is not None:
            return bool(val < hi) if strict_hi else bool(val <= hi)
        return bool(val > lo) if strict_lo else bool(val >= lo)

    numeric_bounds = all(
        b is None or type(b) is float or (type(b) is int and -(2**53) <= b <= 2**53) for b in (lo, hi)
    )

    def check(s: pd.Series) -> pd.Series:
        if s.dtype in [int, float]:
            return vectorised(s)
        if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_ns_dtype(s.dtype):
            raise Fallback("datetime column: GX parses the bounds")
        if numeric_bounds and _exact_as_float(s):
            # Python compares these values with the bounds exactly as float64 does: same verdicts
            # as GX's per-value comparison, without a Python call per value.
            return vectorised(pd.Series(s.to_numpy(dtype=np.float64), index=s.index))
        return s.map(one)

    return check


def _exact_as_float(s: pd.Series) -> bool:
    """Every value a float, or an int (not a bool) that float64 holds exactly."""
    for v in s.to_numpy():
        t = type(v)
        if t is float:
            continue
        if t is int and -(2**53) <= v <= 2**53:
            continue
        return False
    return True


def _lengths_between(exp: Any) -> Condition:
    lo, hi, strict_lo, strict_hi = exp.min_value, exp.max_value, exp.strict_min, exp.strict_max
    if (lo is None and hi is None) or isinstance(lo, dict) or isinstance(hi, dict):
        return _NOT_COMPILED

    def check(s: pd.Series) -> pd.Series:
        lengths = s.astype(str).str.len()
        if lo is not None and hi is not None:
            inclusive = {
                (True, True): "neither",
                (True, False): "right",
                (False, True): "left",
                (False, False): "both",
            }[(bool(strict_lo), bool(strict_hi))]
            return lengths.between(lo, hi, inclusive=inclusive)
        if hi is not None:
            return lengths < hi if strict_hi else lengths <= hi
        return lengths > lo if strict_lo else lengths >= lo

    return check


def _gx_types(names: list[str]) -> tuple[type, ...]:
    """The Python types GX's pandas map metric accepts for these type names (column_values_in_type_list.py)."""
    types: list[Any] = []
    for name in names:
        try:
            types.append(np.dtype(name).type)
        except TypeError:
            for module in (pd, pd.core.dtypes.dtypes):
                found = getattr(module, name, None)
                if isinstance(found, type):
                    types.append(found)
        native = native_type_type_map(name)
        if native is not None:
            types.extend(native)
    return tuple(types)


def _types(names: list[str] | None) -> Condition:
    if names is None:
        return _NOT_COMPILED  # GX validates the column's dtype as a whole
    try:
        allowed = _gx_types(names)
    except Exception:  # a name numpy cannot even parse (np.dtype raises more than TypeError)
        return _NOT_COMPILED
    if not allowed:
        return _NOT_COMPILED  # GX raises "No recognized numpy/python type"

    def check(s: pd.Series) -> pd.Series:
        if s.dtype != object:
            raise Fallback("typed column: GX compares the column's dtype")
        return s.map(lambda x: isinstance(x, allowed))

    return check


_BUILDERS: dict[str, Callable[[Any], Condition | None]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_match_regex": lambda e: _regex(e, negate=False),
    "expect_column_values_to_not_match_regex": lambda e: _regex(e, negate=True),
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_be_between": _between,
    "expect_column_value_lengths_to_be_between": _lengths_between,
    "expect_column_values_to_be_in_type_list": lambda e: _types(e.type_list),
    "expect_column_values_to_be_of_type": lambda e: _types(None if e.type_ is None else [e.type_]),
}
