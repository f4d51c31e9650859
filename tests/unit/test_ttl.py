"""A view's ttl on reads (stores/ttl.py): on every online store, a value older than its view's ttl is served as
null with Feast's OUTSIDE_MAX_AGE, exactly at the boundary (a controlled clock); a training set applies the same
rule at each row's timestamp (Feast's point-in-time join), so online and offline agree; ttl 0 never expires."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from time import time_ns
from typing import Any

import pandas as pd
import pytest
from feast import FeatureStore
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from stores import ttl as ttl_module
from stores.history.sink import HistorySink
from stores.sink import UPSERT, SinkRow
from tests.unit.test_feast_writes import frame

VIEW = "customer_profile"
FEATURES = [f"{VIEW}:country", f"{VIEW}:credit_limit"]
TTL = timedelta(minutes=10)
T0 = datetime(2026, 5, 1, tzinfo=UTC)
NS = 1_000_000_000
_IDS = itertools.count(3_000_000)


@pytest.fixture
def with_ttl(fresh_store: FeatureStore) -> Iterator[FeatureStore]:
    """The store's repository with customer_profile's ttl set to TTL, back to 0 afterwards (a shared repo)."""
    view = fresh_store.get_feature_view(VIEW)
    before = view.ttl
    view.ttl = TTL
    fresh_store.apply([view])
    try:
        yield fresh_store
    finally:
        view.ttl = before
        fresh_store.apply([view])


def at(now: datetime, monkeypatch: pytest.MonkeyPatch, extra_ns: int = 0) -> None:
    monkeypatch.setattr(ttl_module, "clock", lambda: int(now.timestamp()) * NS + extra_ns)


def online(store: FeatureStore, ids: list[int]) -> tuple[list[Any], list[int]]:
    """credit_limit's values and statuses for ``ids``."""
    answer = store.get_online_features(features=FEATURES, entity_rows=[{"customer_id": i} for i in ids])
    names = list(answer.proto.metadata.feature_names.val)
    vector = answer.proto.results[names.index("credit_limit")]
    return answer.to_dict()["credit_limit"], list(vector.statuses)


def test_a_value_past_its_views_ttl_is_outside_max_age_exactly_at_the_boundary(
    with_ttl: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = next(_IDS), next(_IDS)
    base = {"segment": "gold", "birth_date": None, "email": None}
    batch = [
        (0, 0, {**base, "country": "DE", "credit_limit": 1.0}),  # event time T0
        (1, 60, {**base, "country": "FR", "credit_limit": 2.0}),  # a minute later
    ]
    with_ttl.write_to_online_store(VIEW, frame(batch, [old, new]))
    at(T0 + TTL, monkeypatch)  # exactly ttl old: still served
    assert online(with_ttl, [old, new]) == ([1.0, 2.0], [FieldStatus.PRESENT, FieldStatus.PRESENT])
    at(T0 + TTL, monkeypatch, extra_ns=1)  # a nanosecond past it: expired, the younger one not
    assert online(with_ttl, [old, new]) == ([None, 2.0], [FieldStatus.OUTSIDE_MAX_AGE, FieldStatus.PRESENT])
    at(T0 + TTL + timedelta(minutes=1), monkeypatch, extra_ns=1)
    values, statuses = online(with_ttl, [old, new, next(_IDS)])
    assert values == [None, None, None]
    assert statuses == [FieldStatus.OUTSIDE_MAX_AGE, FieldStatus.OUTSIDE_MAX_AGE, FieldStatus.NOT_FOUND]


def test_a_view_without_ttl_never_expires(fresh_store: FeatureStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not fresh_store.get_feature_view(VIEW).ttl
    cid = next(_IDS)
    batch = [
        (0, 0, {"segment": "gold", "birth_date": None, "email": None, "country": "DE", "credit_limit": 1.0})
    ]
    fresh_store.write_to_online_store(VIEW, frame(batch, [cid]))
    at(T0 + timedelta(days=3650), monkeypatch)
    assert online(fresh_store, [cid]) == ([1.0], [FieldStatus.PRESENT])


def test_a_training_set_applies_the_same_ttl_at_each_rows_time(sqlite_store: FeatureStore) -> None:
    """Feast's point-in-time join over the history: a value more than ttl before the row's timestamp is null,
    exactly ttl before is not: the online rule with the row's timestamp for now."""
    view = sqlite_store.get_feature_view(VIEW)
    view.ttl = TTL
    sqlite_store.apply([view])
    try:
        cid = next(_IDS)
        sink = HistorySink(sqlite_store, "test")
        values = {"country": "DE", "segment": "gold", "credit_limit": 1.0, "birth_date": None, "email": None}
        sink.add(
            [
                SinkRow(
                    VIEW,
                    UPSERT,
                    {"customer_id": cid},
                    values,
                    T0,
                    1,
                    "u",
                    "t[0] offset=0",
                    position=("t", 0, 0),
                )
            ]
        )
        sink.flush()
        moments = [T0 + TTL, T0 + TTL + timedelta(microseconds=1), T0 - timedelta(microseconds=1)]
        entities = pd.DataFrame({"customer_id": [cid] * 3, "event_timestamp": moments})
        got = sqlite_store.get_historical_features(
            entity_df=entities, features=[f"{VIEW}:credit_limit"]
        ).to_df()
        by_time = dict(zip(got["event_timestamp"], got["credit_limit"], strict=True))
        assert by_time[pd.Timestamp(T0 + TTL)] == 1.0
        assert pd.isna(by_time[pd.Timestamp(T0 + TTL + timedelta(microseconds=1))]), "past the ttl"
        assert pd.isna(by_time[pd.Timestamp(T0 - timedelta(microseconds=1))]), "before the value existed"
    finally:
        view.ttl = timedelta(0)
        sqlite_store.apply([view])


@given(
    age_ns=st.integers(min_value=-10 * NS, max_value=10_000 * NS),
    ttl_s=st.integers(min_value=0, max_value=5_000),
    status=st.sampled_from([FieldStatus.PRESENT, FieldStatus.NULL_VALUE, FieldStatus.NOT_FOUND]),
)
def test_expire_is_age_greater_than_ttl(age_ns: int, ttl_s: int, status: int) -> None:
    """The rule against its statement, for any age (a clock behind the value's too), ttl and status."""
    now = 2_000_000_000 * NS
    stamp = Timestamp(seconds=(now - age_ns) // NS, nanos=(now - age_ns) % NS)
    response = GetOnlineFeaturesResponse()
    vector = response.results.add()
    vector.values.append(ValueProto(double_val=1.0))
    vector.statuses.append(status)  # type: ignore[arg-type]
    vector.event_timestamps.append(stamp)

    class View:
        ttl = timedelta(seconds=ttl_s)

    expired = ttl_module.expire(response, [(View(), ["x"])], 0, now)
    should = ttl_s > 0 and status != FieldStatus.NOT_FOUND and age_ns > ttl_s * NS
    assert expired == int(should)
    assert vector.statuses[0] == (FieldStatus.OUTSIDE_MAX_AGE if should else status)
    assert vector.values[0].HasField("double_val") != should


def change(cid: int, version: int, event: datetime, limit: float = 1.0) -> SinkRow:
    values = {"country": "DE", "segment": "gold", "credit_limit": limit, "birth_date": None, "email": None}
    return SinkRow(VIEW, UPSERT, {"customer_id": cid}, values, event, version, "u", f"t[0] offset={version}")


def ns(moment: datetime, extra_ns: int = 0) -> int:
    return int(moment.timestamp()) * NS + moment.microsecond * 1000 + extra_ns


def test_expire_removes_exactly_the_values_reads_serve_as_expired(
    with_ttl: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cleanup against the read rule as oracle: entities with random commit times around the boundary; what
    ``expire`` removes at an instant is exactly what a read at that instant calls OUTSIDE_MAX_AGE; the rest is
    served as before."""
    import random

    from stores.registry import open_online_sink

    rng = random.Random(47)
    view = with_ttl.get_feature_view(VIEW)
    now = T0 + TTL + timedelta(minutes=5)
    # Ages around the ttl, to the microsecond (the stored precision), the exact boundary among them.
    ages = [TTL, TTL + timedelta(microseconds=1), TTL - timedelta(microseconds=1)]
    ages += [timedelta(microseconds=rng.randrange(0, 2 * 600_000_000)) for _ in range(40)]
    ids = [next(_IDS) for _ in ages]
    sink = open_online_sink(with_ttl)
    try:
        sink.add([change(cid, 10 + i, now - age) for i, (cid, age) in enumerate(zip(ids, ages, strict=True))])
        sink.flush()
        monkeypatch.setattr(ttl_module, "clock", lambda: ns(now))  # reads at `now`: the oracle
        _, statuses = online(with_ttl, ids)
        should_go = {cid for cid, s in zip(ids, statuses, strict=True) if s == FieldStatus.OUTSIDE_MAX_AGE}
        assert should_go == {cid for cid, age in zip(ids, ages, strict=True) if age > TTL}  # the rule itself
        assert sink.expire(view, ns(now)) == len(should_go)
        _, after = online(with_ttl, ids)
        gone = {cid for cid, s in zip(ids, after, strict=True) if s == FieldStatus.NOT_FOUND}
        assert gone == should_go
        assert set(after) == {FieldStatus.NOT_FOUND, FieldStatus.PRESENT}, "the rest served as before"
        assert sink.expire(view, ns(now)) == 0, "a second run finds nothing left"
    finally:
        sink.close()


def test_expire_keeps_the_version_and_loses_to_a_newer_change(
    with_ttl: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal is a delete at the stored version: a re-delivered older change stays refused after it, a newer
    change applies, a change stored between the cleanup's listing and its write wins over the cleanup, and
    `verify` counts the removed entity as expired, not missing."""
    from jobs.verify import Verifier, _ident
    from stores.registry import open_online_sink

    view = with_ttl.get_feature_view(VIEW)
    old, raced = next(_IDS), next(_IDS)
    now = ns(T0 + TTL + timedelta(minutes=1))
    sink, processor = open_online_sink(with_ttl), open_online_sink(with_ttl)
    try:
        sink.add([change(old, 5, T0), change(raced, 5, T0)])
        sink.flush()
        listed = sink._live_before(VIEW, -(-(now - ttl_module.ttl_ns(view)) // 1000))
        assert sorted(k["customer_id"] for k, _, _ in listed) == sorted([old, raced])
        # The processor stores a newer change of `raced` after the listing, before the cleanup writes.
        processor.add([change(raced, 9, T0 + TTL + timedelta(seconds=30), limit=9.0)])
        processor.flush()
        sink._live_before = lambda *_: listed  # type: ignore[method-assign]
        assert sink.expire(view, now) == 1, "only `old` goes: the newer change of `raced` wins"
        assert sink.stored_stamps(VIEW, [{"customer_id": old}])[0] == (
            (5, 0),
            int(T0.timestamp()) * 1_000_000,
        )
        processor.add([change(old, 4, T0 - timedelta(seconds=1))])  # re-delivered, older than the tombstone
        processor.flush()
        monkeypatch.setattr(ttl_module, "clock", lambda: now)
        values, statuses = online(with_ttl, [old, raced])
        assert statuses[0] == FieldStatus.NOT_FOUND, "the older change stays refused after the removal"
        assert (values[1], statuses[1]) == (9.0, FieldStatus.PRESENT)
        verifier = Verifier(with_ttl, "postgresql://unused", view)  # connects nothing until it runs
        assert verifier._expired(sink, [{"customer_id": old}, {"customer_id": raced}]) == {
            _ident({"customer_id": old})
        }
        monkeypatch.setattr(ttl_module, "clock", time_ns)
        processor.add([change(old, 12, datetime.now(UTC), limit=12.0)])  # a new change after the removal
        processor.flush()
        assert online(with_ttl, [old])[0] == [12.0]
    finally:
        sink.close()
        processor.close()


def test_compact_reports_the_expired_values_it_removed(sqlite_store: FeatureStore, tmp_path: Any) -> None:
    """`featurectl compact` removes the online values past their view's ttl and says how many, per view."""
    from jobs.compact import compact_views
    from stores.registry import open_online_sink

    view = sqlite_store.get_feature_view(VIEW)
    view.ttl = TTL
    sqlite_store.apply([view])
    try:
        sink = open_online_sink(sqlite_store)
        recent = datetime.now(UTC)
        sink.add([change(next(_IDS), 1, T0), change(next(_IDS), 2, T0), change(next(_IDS), 3, recent)])
        sink.flush()
        sink.close()
        lines: list[str] = []
        compact_views(sqlite_store, tmp_path, [VIEW], 1000, lines.append)
        assert f"compact {VIEW}: 2 online value(s) past the view's ttl (0:10:00) removed" in lines
    finally:
        view.ttl = timedelta(0)
        sqlite_store.apply([view])
