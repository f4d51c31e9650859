"""Routes from declarations: a broken view stops only itself; registry hiccups keep the last good routes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int64, String

from core.settings import Settings
from streams.pipeline import Pipeline
from streams.processor import Processor, ProcessorConfig
from streams.routes import check_views, routes_for
from tests.unit.fakes import MemoryDeadLetters, MemorySink, change, customer
from tests.unit.test_pipeline import ROUTE
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator

CUSTOMER = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
SOURCE = FileSource(name="s", path="data/x", timestamp_field="event_timestamp")


def view(name: str, key_tag: str) -> FeatureView:
    fv = FeatureView(
        name=name,
        entities=[CUSTOMER],
        ttl=timedelta(0),
        schema=[Field(name="customer_id", dtype=Int64), Field(name="segment", dtype=String)],
        source=SOURCE,
        tags={"cdc.table": "public.customers", "cdc.key": key_tag},
    )
    fv.entity_columns = [Field(name="customer_id", dtype=Int64)]  # what feast apply infers
    return fv


def test_a_broken_view_gets_a_broken_route_and_the_others_stay_whole() -> None:
    routes = routes_for([view("customer_profile", "customer_id=id"), view("broken", "customer_id")])
    by_view = {r.view: r for r in routes["public.customers"]}
    assert by_view["customer_profile"].error is None
    assert "malformed" in (by_view["broken"].error or "")


def test_a_broken_views_rows_are_dead_lettered_and_the_other_views_rows_flow() -> None:
    broken = routes_for([view("broken", "customer_id")])["public.customers"][0]
    online, dead = MemorySink(), MemoryDeadLetters()
    pipe = Pipeline(
        online,
        MemorySink(),
        dead,  # type: ignore[arg-type]
        BatchValidator(SuiteStore(SUITES_DIR)),
        routes={"public.customers": [ROUTE, broken]},
    )
    pipe.process([change(0, "c", 1, customer(1))])
    pipe.flush()
    assert [r.view for r in online.written] == ["customer_profile"]
    ((_, reason, _, letter_view, _),) = dead.flushed
    assert letter_view == "broken" and "cdc.key='customer_id' is malformed" in reason


def test_check_views_gives_the_processors_reasons_before_apply(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text('{"name": "good", "expectations": []}')
    problems = check_views(
        [view("good", "customer_id=id"), view("broken", "customer_id"), view("no_suite", "customer_id=id")],
        tmp_path,
    )
    assert len(problems) == 2
    assert any("broken" in p and "malformed" in p for p in problems)
    assert any("no expectation suite for feature view 'no_suite'" in p for p in problems)


def test_check_views_refuses_a_malformed_drift_declaration(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text('{"name": "good", "expectations": []}')
    good = view("good", "customer_id=id")
    good.tags["drift.reference"] = "last month"
    (problem,) = check_views([good], tmp_path)
    assert "drift.reference='last month'" in problem and "window:<duration>" in problem


class FlakyRegistry:
    """A store whose registry read fails, or lists nothing, as a file caught mid-rewrite can."""

    def __init__(self) -> None:
        self.mode = "fail"

    def refresh_registry(self) -> None:
        if self.mode == "fail":
            raise OSError("registry.db: truncated protobuf")

    def list_feature_views(self) -> list[Any]:
        return []


@pytest.mark.parametrize("mode", ["fail", "empty"])
def test_a_failed_or_empty_registry_read_keeps_the_last_good_routes(mode: str) -> None:
    store = FlakyRegistry()
    store.mode = mode
    pipeline = Pipeline(
        MemorySink(), MemorySink(), MemoryDeadLetters(), BatchValidator(SuiteStore(SUITES_DIR))
    )  # type: ignore[arg-type]
    pipeline.routes = {"public.customers": [ROUTE]}
    proc = Processor(Settings(), store, ProcessorConfig("shop", "g"), pipeline)  # type: ignore[arg-type]
    proc.refresh_routes(force=True)
    assert pipeline.routes == {"public.customers": [ROUTE]}
