"""Unchanged TOASTed columns: Debezium's placeholders never become feature values (streams/toast.py)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest

from stores.sink import UPSERT
from streams.pipeline import Pipeline
from streams.toast import PLACEHOLDER, is_unavailable
from tests.unit.fakes import MemoryDeadLetters, MemorySink, change, customer
from tests.unit.test_pipeline import ROUTE
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator

RAW = PLACEHOLDER.encode()


@pytest.mark.parametrize(
    "form",
    [
        PLACEHOLDER,  # text, varchar, json, jsonb, xml
        base64.b64encode(RAW).decode(),  # bytea, binary.handling.mode=base64
        RAW.hex(),  # bytea, binary.handling.mode=hex
        [PLACEHOLDER],  # text[]
        [base64.b64encode(RAW).decode()],  # bytea[]
        list(RAW),  # int[] and bigint[]: the placeholder's bytes as numbers
        {PLACEHOLDER: PLACEHOLDER},  # hstore as a map
        '{"' + PLACEHOLDER + '":"' + PLACEHOLDER + '"}',  # hstore as JSON text
    ],
)
def test_every_form_of_the_placeholder_is_recognised(form: Any) -> None:
    assert is_unavailable(form)


def test_uuid_array_placeholder_is_javas_name_based_uuid_of_the_placeholder() -> None:
    # UUID.nameUUIDFromBytes("__debezium_unavailable_value".getBytes()) in Java
    java = uuid.UUID(bytes=hashlib.md5(RAW).digest(), version=3)
    assert is_unavailable([str(java)])


@pytest.mark.parametrize(
    "value", ["", "hello", PLACEHOLDER + " ", [], [1, 2, 3], ["a"], {"a": "b"}, None, 0, 1.5, True, "{}"]
)
def test_ordinary_values_are_not_placeholders(value: Any) -> None:
    assert not is_unavailable(value)


@pytest.fixture
def parts() -> tuple[Pipeline, MemorySink, MemorySink, MemoryDeadLetters]:
    online, offline, dead = MemorySink(), MemorySink(), MemoryDeadLetters()
    validator = BatchValidator(SuiteStore(SUITES_DIR))
    pipe = Pipeline(online, offline, dead, validator, routes={"public.customers": [ROUTE]})  # type: ignore[arg-type]
    return pipe, online, offline, dead


def test_placeholder_after_an_earlier_change_in_the_same_batch_keeps_that_value(parts: Any) -> None:
    pipe, online, offline, dead = parts
    pipe.process(
        [
            change(0, "c", 1, customer(1, segment="gold")),
            change(1, "u", 1, customer(1, segment=PLACEHOLDER, credit_limit="20.00")),
        ]
    )
    pipe.flush()
    assert dead.flushed == []
    assert [r.features["segment"] for r in offline.written] == ["gold", "gold"]
    assert offline.written[1].features["credit_limit"] == 20.0
    assert online.current_features("customer_profile", [{"customer_id": 1}])[0]["segment"] == "gold"  # type: ignore[index]


def test_placeholder_in_a_later_batch_keeps_the_online_stores_value(parts: Any) -> None:
    pipe, online, offline, dead = parts
    pipe.process([change(0, "c", 1, customer(1, segment="silver"))])
    pipe.flush()
    pipe.process([change(1, "u", 1, customer(1, segment=PLACEHOLDER, country="FR"))])
    pipe.flush()
    assert dead.flushed == []
    latest = offline.written[-1]
    assert (
        latest.op == UPSERT and latest.features["segment"] == "silver" and latest.features["country"] == "FR"
    )
    stored = online.current_features("customer_profile", [{"customer_id": 1}])[0]
    assert stored is not None and stored["segment"] == "silver" and stored["country"] == "FR"


def test_a_placeholder_nothing_can_fill_is_dead_lettered_with_the_fix_and_the_rest_flows(parts: Any) -> None:
    pipe, online, offline, dead = parts
    stats = pipe.process(
        [
            change(0, "u", 7, customer(7, segment=PLACEHOLDER)),
            change(1, "c", 8, customer(8)),
        ]
    )
    pipe.flush()
    assert stats.dead_letters == 1
    ((_, reason, _, view, _),) = dead.flushed
    assert view == "customer_profile" and "segment" in reason and "REPLICA IDENTITY FULL" in reason
    assert "featurectl snapshot public.customers" in reason
    assert [r.keys for r in offline.written] == [{"customer_id": 8}]
    assert all(PLACEHOLDER not in str(r.features) for r in offline.written + list(online.state.values()))
