"""Feature values serialised directly equal Feast's own ``python_values_to_proto_values`` bytes."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from stores.values import _fast, value_bytes


def feast_bytes(values: list[Any], value_type: ValueType) -> list[bytes]:
    return [p.SerializeToString() for p in python_values_to_proto_values(values, value_type)]


POOLS: dict[ValueType, list[Any]] = {
    ValueType.INT64: [0, 1, -1, 2**63 - 1, -(2**63), 123456789012, None],
    ValueType.INT32: [0, 7, -(2**31), 2**31 - 1, None],
    ValueType.DOUBLE: [0.0, -0.0, 1.5, 1e308, 5e-324, math.inf, -math.inf, math.nan, None, 10.0],
    ValueType.FLOAT: [0.0, 1.1, 3.4e38, 1e-45, math.nan, math.inf, None],
    ValueType.STRING: ["", "a", "ü", "😀 x", "a" * 300, "\x00", None],
    ValueType.BOOL: [True, False, None],
}


@pytest.mark.parametrize("value_type", list(POOLS), ids=lambda t: t.name)
def test_every_handled_value_is_built_directly_and_equals_feasts_bytes(value_type: ValueType) -> None:
    rng = random.Random(11)
    for _ in range(300):
        values = [rng.choice(POOLS[value_type]) for _ in range(rng.randint(1, 8))]
        if all(v is None for v in values):
            continue  # Feast infers nothing from an all-None column; handled below
        fast = _fast(values, value_type)
        assert fast is not None, values
        assert fast == feast_bytes(values, value_type), values


@pytest.mark.parametrize(
    ("values", "value_type"),
    [
        ([True, 1], ValueType.INT64),  # a bool in an int column
        ([2**63], ValueType.INT64),  # out of range: Feast's error
        ([1, 2.5], ValueType.DOUBLE),  # an int in a float column
        (["\ud800"], ValueType.STRING),  # a lone surrogate
    ],
)
def test_anything_else_is_left_to_feast(values: list[Any], value_type: ValueType) -> None:
    assert _fast(values, value_type) is None
    try:
        expected: Any = feast_bytes(values, value_type)
    except Exception as exc:  # whatever Feast raises, value_bytes raises too
        with pytest.raises(type(exc)):
            value_bytes(values, value_type)
    else:
        assert value_bytes(values, value_type) == expected


def test_all_none_and_unhandled_types() -> None:
    assert value_bytes([None, None], ValueType.DOUBLE) == [b"", b""]
    assert value_bytes([b"\x01"], ValueType.BYTES) == feast_bytes([b"\x01"], ValueType.BYTES)
