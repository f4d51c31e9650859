"""Expectation suites as data files: ``<suites_dir>/<feature_view>.json`` in Great Expectations' format.

Files are re-read when they change, so fixing a suite takes effect in a running processor (and
for a dead-letter replay) without a restart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
from great_expectations.exceptions.exceptions import GreatExpectationsError
from great_expectations.expectations.expectation import Expectation

from core.errors import ConfigError

logger = logging.getLogger(__name__)
SUITES_DIR = Path(__file__).resolve().parent / "suites"

# Expectations that check a value's Python type. They run first, on the values as decoded, so
# that range and set checks (which cannot compare a str with a float) only see well-typed rows.
TYPE_EXPECTATIONS = {"expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"}


@dataclass(frozen=True, slots=True)
class Suite:
    """A feature view's expectations, split into the type pass and the value pass."""

    name: str
    type_checks: gx.ExpectationSuite
    value_checks: gx.ExpectationSuite
    all_checks: gx.ExpectationSuite


class SuiteStore:
    """Loads suites from a folder; reloads a file when its modification time changes."""

    def __init__(self, suites_dir: Path = SUITES_DIR) -> None:
        self.suites_dir = suites_dir
        self._cache: dict[str, tuple[float, Suite]] = {}

    def path(self, view: str) -> Path:
        return self.suites_dir / f"{view}.json"

    def get(self, view: str) -> Suite:
        """The suite of ``view``; ConfigError if it is missing or malformed."""
        path = self.path(view)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            raise ConfigError(
                f"no expectation suite for feature view {view!r} ({path} does not exist)",
                f"add {path}: every feature view needs a suite before its rows are materialised",
            ) from None
        cached = self._cache.get(view)
        if cached and cached[0] == mtime:
            return cached[1]
        suite = _load(path, view)
        self._cache[view] = (mtime, suite)
        logger.info(
            "loaded expectation suite %s (%d type checks, %d value checks)",
            path,
            len(suite.type_checks.expectations),
            len(suite.value_checks.expectations),
        )
        return suite


def _load(path: Path, view: str) -> Suite:
    try:
        raw = json.loads(path.read_text())
        configs = raw["expectations"]
        if not isinstance(configs, list):
            raise TypeError("'expectations' must be a list")

        def build() -> list[Expectation]:
            return [
                gx.expectations.registry.get_expectation_impl(cfg["type"])(
                    **cfg.get("kwargs", {}), meta=cfg.get("meta")
                )
                for cfg in configs
            ]

        expectations = build()
        # A suite owns its expectation objects: the one-run suite gets instances of its own.
        together = build()
    except (ValueError, KeyError, TypeError, GreatExpectationsError) as exc:
        raise ConfigError(
            f"expectation suite {path} is invalid: {exc}",
            "fix the file (Great Expectations suite JSON: name, expectations[type, kwargs])",
        ) from None
    by_type = [e for e in expectations if e.expectation_type in TYPE_EXPECTATIONS]
    by_value = [e for e in expectations if e.expectation_type not in TYPE_EXPECTATIONS]
    return Suite(
        view,
        gx.ExpectationSuite(name=f"{view}.types", expectations=by_type),
        gx.ExpectationSuite(name=f"{view}.values", expectations=by_value),
        gx.ExpectationSuite(name=view, expectations=together),
    )
