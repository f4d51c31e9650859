"""PII handling (streams/pii.py): before validation, in both stores, in dead letters, once on replay."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import pytest
from feast import Entity, FeatureView, Field, PushSource
from feast.infra.offline_stores.file_source import FileSource
from feast.types import Array, Float32, Int64, String

from core.errors import ConfigError
from streams import pii
from streams.dlq import DeadLetter
from streams.pipeline import Pipeline
from streams.routes import route_for, routes_for
from tests.unit.fakes import MemoryDeadLetters, MemorySink, change, customer
from tests.unit.test_pipeline import ROUTE
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator


def hashed(text: str, key: bytes) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def test_handlings(pii_hash_key: bytes) -> None:
    assert pii.apply("hash", "ann@example.com") == hashed("ann@example.com", pii_hash_key)
    assert pii.apply("hash", "ann@example.com") == pii.apply("hash", "ann@example.com")  # joins still work
    assert pii.apply("mask", "ann@example.com") == "a***@example.com"
    assert pii.apply("mask", "Ann Smith") == "A***"
    assert pii.apply("redact", "Ann") == pii.REDACTED
    assert pii.apply("drop", "Ann") is None
    assert pii.apply("hash", None) is None  # a null is not personal data
    assert pii.strictest([{"email": "mask"}, {"email": "hash", "name": "drop"}]) == {
        "email": "hash",
        "name": "drop",
    }


def test_a_hashed_column_reaches_both_stores_hashed_and_a_dead_letter_masked(pii_hash_key: bytes) -> None:
    online, offline, dead = MemorySink(), MemorySink(), MemoryDeadLetters()
    validator = BatchValidator(SuiteStore(SUITES_DIR))
    pipe = Pipeline(online, offline, dead, validator, routes={"public.customers": [ROUTE]})  # type: ignore[arg-type]
    good = customer(1, email="ann@example.com", full_name="Ann Smith")
    bad = customer(2, email="bob@example.com", full_name="Bob Jones", segment="vip!!")  # fails its suite
    pipe.process([change(0, "c", 1, good), change(1, "c", 2, bad)])
    pipe.flush()
    want = hashed("ann@example.com", pii_hash_key)
    assert [r.features["email"] for r in online.written] == [want]
    assert [r.features["email"] for r in offline.written] == [want]
    # Validation ran on the hashed value (the suite checks for 64 hex characters).
    ((_msg, reason, *_),) = dead.flushed
    assert "failed expectations" in reason
    assert dead.policies == [{"email": "hash", "full_name": "mask"}]


def test_dead_letter_sink_keeps_only_handled_values_and_replay_handles_nothing_twice(
    pii_hash_key: bytes,
) -> None:
    from streams.dlq import DeadLetterSink

    sink = DeadLetterSink.__new__(DeadLetterSink)  # no producer: only add() is exercised
    sink.topic, sink._pending = "dlq", []
    raw = change(
        5,
        "u",
        3,
        customer(3, email="cy@example.com", full_name="Cy Young"),
        customer(3, email="old@example.com"),
    )
    sink.add(
        raw,
        "failed expectations: x",
        view="customer_profile",
        pii_policy={"email": "hash", "full_name": "mask"},
    )
    (letter,) = sink._pending
    stored = json.loads(letter.to_json())
    assert stored["pii_handled"] == {"email": "hash", "full_name": "mask"}
    value = json.loads(letter.value or b"")
    assert value["after"]["email"] == hashed("cy@example.com", pii_hash_key)
    assert value["before"]["email"] == hashed("old@example.com", pii_hash_key)
    assert value["after"]["full_name"] == "C***"
    assert b"cy@example.com" not in letter.to_json() and b"Cy Young" not in letter.to_json()

    # Replayed: the pipeline does not hash the hash again, and a second dead letter is not re-masked.
    replayed = DeadLetter.from_json(letter.to_json())
    online, offline, dead = MemorySink(), MemorySink(), MemoryDeadLetters()
    pipe = Pipeline(
        online, offline, dead, BatchValidator(SuiteStore(SUITES_DIR)), routes={"public.customers": [ROUTE]}
    )  # type: ignore[arg-type]
    pipe.process([replayed.message()])
    pipe.flush()
    assert [r.features["email"] for r in online.written] == [hashed("cy@example.com", pii_hash_key)]
    sink._pending = []
    sink.add(replayed.message(), "again", pii_policy={"email": "hash", "full_name": "mask"})
    again = json.loads(sink._pending[0].value or b"")
    assert again["after"]["email"] == hashed("cy@example.com", pii_hash_key)


def _view(name: str, tags: dict[str, str], vector: bool = False) -> FeatureView:
    entity = Entity(name="customer", join_keys=["customer_id"])
    source = PushSource(
        name=f"{name}_push",
        batch_source=FileSource(name=f"{name}_src", path="x", timestamp_field="event_timestamp"),
    )
    schema = [
        Field(name="customer_id", dtype=Int64),
        Field(name="email", dtype=String),
        Field(name="bio", dtype=String),
    ]
    if vector:
        schema.append(
            Field(
                name="bio_embedding",
                dtype=Array(Float32),
                vector_index=True,
                vector_length=8,
                vector_search_metric="COSINE",
            )
        )
    return FeatureView(
        name=name, entities=[entity], ttl=timedelta(0), schema=schema, source=source, tags=tags
    )


BASE = {"cdc.table": "public.customers", "cdc.key": "customer_id=id"}
EMBED = {
    "embedding.text": "bio",
    "embedding.model": "m-8",
    "embedding.backend": "tests.unit.fakes:hash_embedder",
}


def test_a_view_embedding_a_column_declared_pii_is_refused_unless_it_says_so() -> None:
    profile = _view("profile", {**BASE, "pii.bio": "redact"})
    embeds = _view("bios", {**BASE, **EMBED}, vector=True)
    routes: dict[str, Any] = {r.view: r for r in routes_for([profile, embeds])["public.customers"]}
    assert routes["profile"].error is None
    assert routes["bios"].error and "embedding.allow_pii='bio'" in routes["bios"].error
    allowed = _view("bios", {**BASE, **EMBED, "embedding.allow_pii": "bio"}, vector=True)
    assert {r.view: r.error for r in routes_for([profile, allowed])["public.customers"]} == {
        "profile": None,
        "bios": None,
    }
    with pytest.raises(ConfigError, match="would embed the handled value"):
        route_for(_view("self", {**BASE, **EMBED, "pii.bio": "hash"}, vector=True))


def test_declarations_that_cannot_work_are_refused() -> None:
    with pytest.raises(ConfigError, match="not a PII handling"):
        route_for(_view("v", {**BASE, "pii.email": "encrypt"}))
    with pytest.raises(ConfigError, match="join key"):
        route_for(_view("v", {**BASE, "pii.id": "hash"}))
    entity = Entity(name="customer", join_keys=["customer_id"])
    source = PushSource(
        name="n_push", batch_source=FileSource(name="n_src", path="x", timestamp_field="event_timestamp")
    )
    numeric = FeatureView(
        name="n",
        entities=[entity],
        ttl=timedelta(0),
        source=source,
        tags={**BASE, "pii.age": "hash"},
        schema=[Field(name="customer_id", dtype=Int64), Field(name="age", dtype=Int64)],
    )
    with pytest.raises(ConfigError, match="makes text"):
        route_for(numeric)
