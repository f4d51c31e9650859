"""Keys of date and time columns: the form clients ask with, from Debezium's text, for every value
(connectors/pgtypes.py). The real Debezium and Postgres check the same in tests/integration/test_type_matrix.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from feast.types import Int64, String
from hypothesis import given
from hypothesis import strategies as st

from connectors.encoding import debezium_encoding
from connectors.pgtypes import KEY_TYPES, KeyColumn, client_key, key_form, key_problem
from streams.events import ChangeEvent
from streams.routes import Route
from streams.transform import feature_row

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
naive = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30))


@given(st.dates())
def test_a_date_key_is_its_iso_date(value: date) -> None:
    assert key_form("date")(debezium_encoding(value)) == client_key(value) == value.isoformat()


@given(naive)
def test_a_timestamp_key_is_its_iso_text_without_a_zone(value: datetime) -> None:
    assert key_form("timestamp")(debezium_encoding(value)) == client_key(value) == value.isoformat()


@given(naive, offsets)
def test_a_timestamptz_key_is_the_utc_instant(value: datetime, zone: timezone) -> None:
    aware = value.replace(tzinfo=zone)
    want = aware.astimezone(UTC).isoformat()
    assert key_form("timestamptz")(debezium_encoding(aware)) == client_key(aware) == want
    assert want.endswith("+00:00")


@given(st.times())
def test_a_time_key_is_its_iso_time(value: time) -> None:
    assert key_form("time")(debezium_encoding(value)) == client_key(value) == value.isoformat()


@given(st.times(), offsets)
def test_a_timetz_key_is_the_utc_time(value: time, zone: timezone) -> None:
    aware = value.replace(tzinfo=zone)
    assert key_form("timetz")(debezium_encoding(aware)) == client_key(aware)
    assert client_key(aware).endswith("+00:00")


def test_values_without_a_client_form_have_no_key() -> None:
    for cast, text in (("date", "infinity"), ("date", "+10000-01-01Z"), ("timestamp", "-infinity")):
        assert key_form(cast)(text) is None
    assert key_form("date")(None) is None


def test_the_stream_keys_a_declared_date_column_by_its_iso_date() -> None:
    route = Route(
        "events",
        "public.events",
        (("event_id", "event_id"), ("day", "day")),
        (("amount", Int64),),
        (("event_id", Int64), ("day", String)),
        key_casts=(("event_id", None), ("day", "date")),
    )
    event = ChangeEvent(
        "t", 0, 1, {"event_id": 1, "day": "2026-10-15Z"}, "d", {"event_id": 1, "day": "2026-10-15Z"}, None,
        1, 1, 1, 1, None, "public.events",
    )  # fmt: skip
    assert feature_row(event, route) == {"event_id": 1, "day": "2026-10-15", "amount": None}


def key(column: str, entity: str, cast: str | None = None, declaration: str = "") -> KeyColumn:
    return KeyColumn("events", "public.events", "day", column, entity, cast, declaration or f"day={column}")


@pytest.mark.parametrize("base", sorted(KEY_TYPES))
def test_each_key_type_has_one_right_declaration_and_every_other_is_refused_with_it(base: str) -> None:
    holders, cast = KEY_TYPES[base]
    right = key("c", holders[0], cast, "event_id=event_id,day=c" + (f"::{cast}" if cast else ""))
    assert key_problem(right, base) is None
    if cast:
        problem = key_problem(key("c", holders[0], None, "event_id=event_id,day=c"), base)
        assert problem is not None and f"fix: set cdc.key='event_id=event_id,day=c::{cast}'" in problem
    wrong_entity = next(t for t in ("STRING", "INT64", "BYTES") if t not in holders)
    problem = key_problem(key("c", wrong_entity, cast), base)
    assert problem is not None and "fix: declare the entity with value_type=ValueType." in problem


def test_a_type_no_client_can_key_by_is_refused() -> None:
    for base in ("float8", "jsonb", "_int4", "interval", "bool"):
        problem = key_problem(key("c", "STRING"), base)
        assert problem is not None and f"is of type {base}, which cannot be a key" in problem
