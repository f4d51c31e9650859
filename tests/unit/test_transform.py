from datetime import UTC, datetime

from feast.types import Array, Bool, Float64, Int64, String, UnixTimestamp

from streams.events import ChangeEvent
from streams.routes import Route
from streams.transform import commit_time, decode_value, feature_row


def test_debezium_encodings_decode_to_feast_types() -> None:
    assert decode_value("2500.00", Float64) == 2500.0  # decimal.handling.mode=string
    assert decode_value(3, Float64) == 3.0
    assert decode_value("42", Int64) == 42
    assert decode_value("1990-05-17Z", UnixTimestamp) == datetime(1990, 5, 17, tzinfo=UTC)  # isostring date
    assert decode_value("2026-11-22T07:52:33.126571Z", UnixTimestamp) == datetime(
        2026, 11, 22, 7, 52, 33, 126571, tzinfo=UTC
    )
    assert decode_value(["a", "b"], Array(String)) == ["a", "b"]
    assert decode_value({"k": 1}, String) == '{"k":1}'
    assert decode_value(None, Float64) is None
    assert decode_value(True, Bool) is True


def test_values_that_do_not_fit_pass_through_for_validation_to_reject() -> None:
    assert decode_value("abc", Float64) == "abc"
    assert decode_value("x", Int64) == "x"
    assert decode_value(True, Int64) is True  # a bool is not an int here
    assert decode_value(1.5, Int64) == 1.5
    assert decode_value("not a time", UnixTimestamp) == "not a time"


def _event(
    op: str, before: dict | None, after: dict | None, ts_us: int | None = 1_700_000_000_123_456
) -> ChangeEvent:
    return ChangeEvent(
        "t", 0, 1, {"id": 7}, op, before, after, 1_700_000_000_123, ts_us, 99, 1, None, "public.customers"
    )


ROUTE = Route(
    "customer_profile",
    "public.customers",
    (("customer_id", "id"),),
    (("segment", String), ("credit_limit", Float64)),
    (("customer_id", Int64),),
)


def test_feature_row_maps_key_and_columns_and_ignores_unknown_columns() -> None:
    row = feature_row(
        _event("u", None, {"id": 7, "segment": "gold", "credit_limit": "1.50", "new_col": 1}), ROUTE
    )
    assert row == {"customer_id": 7, "segment": "gold", "credit_limit": 1.5}


def test_dropped_column_becomes_null() -> None:
    assert feature_row(_event("u", None, {"id": 7, "segment": "gold"}), ROUTE)["credit_limit"] is None


def test_delete_takes_the_key_from_the_before_image() -> None:
    assert feature_row(_event("d", {"id": 7, "segment": "x"}, None), ROUTE)["customer_id"] == 7


def test_commit_time_has_microseconds() -> None:
    assert commit_time(_event("c", None, {})) == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert commit_time(_event("c", None, {}, ts_us=None)) == datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )
