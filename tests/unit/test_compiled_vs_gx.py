"""Differential test: compiled expectations (validation/compiled.py) against Great Expectations itself.

Seeded batches of awkward values (ints, floats with NaN and Infinity, unicode and empty strings, nulls
everywhere, bools, timestamps, mixed types in one column), as object columns (the validator's type pass)
and with dtypes inferred (its value pass), through every compiled expectation type with and without
``mostly``. For each, GX's success and unexpected rows must equal the compiled check's, unless the
compiled check hands the batch to GX (Fallback), which is counted so it cannot become the norm.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx
from great_expectations.data_context.types.base import ProgressBarsConfig

from validation.compiled import Fallback, compile_expectation

# Batches (each as object columns and with inferred dtypes) x len(CONFIGS) verdicts. GX needs ~0.1 s per
# batch on a quiet machine (0.36 s measured in CI), so CI runs 100 (~70 s); PYTEST_FEATURECTL_DIFF_BATCHES=5000 runs a
# longer one.
BATCHES = int(os.environ.get("PYTEST_FEATURECTL_DIFF_BATCHES", "100"))
SEED = 20261123

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("expect_column_values_to_not_be_null", {}),
    ("expect_column_values_to_not_be_null", {"mostly": 0.7}),
    ("expect_column_values_to_be_in_set", {"value_set": [1, 2, "a", 2.5, "ü"]}),
    ("expect_column_values_to_be_in_set", {"value_set": [0, 1, True, "", "b"], "mostly": 0.5}),
    ("expect_column_values_to_not_be_in_set", {"value_set": [0, "", "x", 3.0]}),
    ("expect_column_values_to_not_be_in_set", {"value_set": [1], "mostly": 0.8}),
    ("expect_column_values_to_match_regex", {"regex": "^[a-z]+$"}),
    ("expect_column_values_to_match_regex", {"regex": r"\d", "mostly": 0.6}),
    ("expect_column_values_to_match_regex", {"regex": "(?<=a)b|(x)\\1|é"}),  # lookbehind, backreference
    ("expect_column_values_to_not_match_regex", {"regex": "^$|nan|inf"}),
    ("expect_column_values_to_not_match_regex", {"regex": "[A-Z]", "mostly": 0.5}),
    ("expect_column_values_to_be_unique", {}),
    ("expect_column_values_to_be_unique", {"mostly": 0.75}),
    ("expect_column_values_to_be_between", {"min_value": 0, "max_value": 10}),
    ("expect_column_values_to_be_between", {"min_value": -1.5, "mostly": 0.6}),
    ("expect_column_values_to_be_between", {"max_value": 100, "strict_max": True}),
    ("expect_column_values_to_be_between", {"min_value": 0, "max_value": 3, "strict_min": True}),
    ("expect_column_values_to_be_between", {"min_value": datetime(2026, 1, 1, tzinfo=UTC)}),
    ("expect_column_value_lengths_to_be_between", {"min_value": 1, "max_value": 3}),
    ("expect_column_value_lengths_to_be_between", {"max_value": 2, "strict_max": True, "mostly": 0.5}),
    ("expect_column_value_lengths_to_be_between", {"min_value": 2, "max_value": 4, "strict_min": True}),
    ("expect_column_values_to_be_in_type_list", {"type_list": ["int"]}),
    ("expect_column_values_to_be_in_type_list", {"type_list": ["float", "int"], "mostly": 0.6}),
    ("expect_column_values_to_be_in_type_list", {"type_list": ["str"]}),
    ("expect_column_values_to_be_in_type_list", {"type_list": ["int64", "bool"]}),
    ("expect_column_values_to_be_of_type", {"type_": "str"}),
    ("expect_column_values_to_be_of_type", {"type_": "float", "mostly": 0.5}),
]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = ["int", "float", "str", "bool", "time", "mixed", "sparse"]


def _value(rng: random.Random, kind: str) -> Any:
    if kind == "mixed":
        kind = rng.choice(["int", "float", "str", "bool", "time"])
    if rng.random() < 0.15:
        return rng.choice([None, float("nan")]) if kind in ("float", "mixed") else None
    if kind == "int":
        return rng.choice([0, 1, 2, 3, -1, 10, 11, 100, 2**40, -(2**31), rng.randint(-50, 50)])
    if kind == "float":
        return rng.choice(
            [
                0.0,
                -0.0,
                1.0,
                2.5,
                9.99,
                10.0,
                10.5,
                -1.5,
                -2.0,
                float("inf"),
                float("-inf"),
                float("nan"),
                1e300,
            ]
        )
    if kind == "str":
        return rng.choice(
            ["", "a", "b", "ab", "abc", "xx", "x", "é", "ü", "😀", "A", "1", "2.5", "nan", " ", "zz9"]
        )
    if kind == "bool":
        return rng.choice([True, False])
    return T0 + timedelta(days=rng.randint(-3, 3))


def _batches() -> list[pd.DataFrame]:
    rng = random.Random(SEED)
    frames = []
    for _ in range(BATCHES):
        kind = rng.choice(KINDS)
        n = rng.choice([0, 1, 2, 3, 5, 8, 13, 30])
        if kind == "sparse":  # mostly or entirely null
            values = [None if rng.random() < 0.8 else _value(rng, "mixed") for _ in range(n)]
        else:
            values = [_value(rng, kind) for _ in range(n)]
        frame = pd.DataFrame({"x": pd.Series(values, dtype=object)})
        frames.append(frame)
        frames.append(frame.infer_objects())
    return frames


def _key(etype: str, kwargs: dict[str, Any]) -> str:
    return etype + repr(
        sorted((k, repr(v)) for k, v in kwargs.items() if k not in ("batch_id", "result_format"))
    )


def test_compiled_expectations_give_gx_verdicts_row_for_row() -> None:
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (
        context.data_sources.add_pandas("oracle")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("all")
    )
    expectations = [gx.expectations.registry.get_expectation_impl(t)(column="x", **kw) for t, kw in CONFIGS]
    checks = [compile_expectation(e) for e in expectations]
    assert all(c is not None for c in checks), "every configuration here is one the module compiles"
    suite = gx.ExpectationSuite(
        name="oracle",
        expectations=[
            gx.expectations.registry.get_expectation_impl(t)(column="x", **kw) for t, kw in CONFIGS
        ],
    )
    compared = fell_back = failing = 0
    mismatches: list[str] = []
    started = time.monotonic()
    for frame in _batches():
        result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format={"result_format": "COMPLETE"}
        )
        assert len(result.results) == len(CONFIGS)
        by_config = {_key(r.expectation_config.type, r.expectation_config.kwargs): r for r in result.results}  # type: ignore[union-attr]
        for (etype, kwargs), check, exp in zip(CONFIGS, checks, expectations, strict=True):
            res = by_config[_key(etype, exp.configuration.kwargs)]
            assert check is not None and res.expectation_config is not None
            assert res.expectation_config.type == etype
            try:
                got = check.evaluate(frame)
            except Fallback:
                fell_back += 1
                continue
            compared += 1
            failing += not res.success
            errored = bool((res.exception_info or {}).get("raised_exception"))
            want_rows = sorted(res.result.get("unexpected_index_list") or [])
            if errored or got.success != res.success or sorted(got.unexpected) != want_rows:
                mismatches.append(
                    f"{etype} {kwargs} on {frame['x'].tolist()!r} ({frame['x'].dtype}): GX success={res.success} "
                    f"rows={want_rows} error={errored}; compiled success={got.success} rows={sorted(got.unexpected)}"
                )
    elapsed = time.monotonic() - started
    print(f"{compared} verdicts compared ({failing} failing), {fell_back} handed to GX, {elapsed:.1f}s")
    assert not mismatches, f"{len(mismatches)} mismatches, e.g.:\n" + "\n".join(mismatches[:15])
    assert fell_back < 0.2 * (compared + fell_back), f"{fell_back} of {compared + fell_back} fell back to GX"
    assert 0.2 * compared < failing < 0.8 * compared  # the batches make expectations fail and pass


def test_the_validator_gives_the_same_verdicts_and_reasons_compiled_as_through_gx() -> None:
    """The shipped suites, on batches of rows mixing good and bad values of every kind: the compiled
    validator's valid rows and per-row failures (expectation, column, arguments, value) equal GX's."""
    from validation.suites import SUITES_DIR, SuiteStore
    from validation.validator import BatchValidator

    store = SuiteStore(SUITES_DIR)
    compiled, oracle = BatchValidator(store), BatchValidator(store, compiled=False)
    rng = random.Random(SEED)
    good = {
        "customer_profile": {"customer_id": 7, "country": "GB", "segment": "gold", "credit_limit": 10.5},
        "order_status": {"order_id": 3, "status": "paid", "total": 12.0},
    }
    for view in sorted(p.stem for p in SUITES_DIR.glob("*.json")):
        suite = store.get(view)
        columns = sorted({e.column for e in suite.all_checks.expectations if hasattr(e, "column")})
        for _ in range(25):
            rows = []
            for _ in range(rng.choice([1, 4, 12])):
                row = dict(good.get(view, {}))
                for column in columns:
                    if column not in row or rng.random() < 0.3:
                        row[column] = _value(rng, rng.choice(KINDS[:-1]))
                rows.append(row)
            got, want = compiled.validate(view, rows), oracle.validate(view, rows)

            def norm(verdict: Any) -> dict[int, list[str]]:
                return {
                    i: sorted(repr(f.as_dict()) for f in failures) for i, failures in verdict.invalid.items()
                }

            assert got.valid == want.valid, (view, rows)
            assert norm(got) == norm(want), (view, rows)
