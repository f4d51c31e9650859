"""Feature values as the bytes Feast's online stores hold (``ValueProto``), built directly for common types.

Feast's ``python_values_to_proto_values`` checks every value against arrays, pandas nulls and
timestamps before building its protobuf: about 10 us per value, paid for every feature of every row
the processor writes. For columns whose values are all None or exactly the Python type of their
declared scalar type (int for INT32/INT64 within range, float for FLOAT/DOUBLE, str, bool), this
builds the same protobufs directly (None and NaN as the empty value, as Feast does). Anything else
goes through Feast; tests/unit/test_value_bytes.py holds the two byte-equal.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

# Per scalar type: the protobuf field, the Python type it takes, and the bounds of an int field.
_FIELDS: dict[ValueType, tuple[str, type, tuple[int, int] | None]] = {
    ValueType.INT64: ("int64_val", int, (-(2**63), 2**63 - 1)),
    ValueType.INT32: ("int32_val", int, (-(2**31), 2**31 - 1)),
    ValueType.DOUBLE: ("double_val", float, None),
    ValueType.FLOAT: ("float_val", float, None),
    ValueType.STRING: ("string_val", str, None),
    ValueType.BOOL: ("bool_val", bool, None),
}

# ``double_val`` is field 5, fixed 64-bit: tag (5 << 3) | 1, then the IEEE bytes, little-endian. A oneof
# member, so 0.0 is written too.
_DOUBLE_TAG = b"\x29"
_pack_double = struct.Struct("<d").pack


def value_bytes(values: Sequence[Any], value_type: ValueType) -> list[bytes]:
    """Each value serialised as Feast's ``ValueProto`` of ``value_type`` (Feast's own rules throughout,
    but for timestamps before 1970, see ``_timestamps``)."""
    if value_type is ValueType.UNIX_TIMESTAMP:
        stamped = _timestamps(values)
        if stamped is not None:
            return stamped
    fast = _fast(values, value_type)
    if fast is not None:
        return fast
    return [p.SerializeToString() for p in python_values_to_proto_values(list(values), value_type)]


def _fast(values: Sequence[Any], value_type: ValueType) -> list[bytes] | None:
    spec = _FIELDS.get(value_type)
    if spec is None:
        return None
    field, kind, bounds = spec
    out: list[bytes] = []
    # A column's values repeat (countries, segments, flags): each distinct one is serialised once. All
    # values are exactly ``kind`` here (checked below), so 1 and True never share an entry.
    made: dict[Any, bytes] = {}
    for value in values:
        if value is None:
            out.append(b"")
        elif not _exactly(value, kind):
            return None  # a bool in an int column, numpy scalars, ...: Feast decides
        elif kind is float:
            if math.isnan(value):
                out.append(b"")  # pd.isnull(NaN): Feast stores no value
            elif value_type is ValueType.DOUBLE:
                out.append(_DOUBLE_TAG + _pack_double(value))  # the protobuf's exact bytes, 6x cheaper
            else:
                out.append(ValueProto(**{field: value}).SerializeToString())
        else:
            raw = made.get(value)
            if raw is None:
                if bounds is not None and not bounds[0] <= value <= bounds[1]:
                    return None  # Feast's error, not ours
                try:
                    raw = made[value] = ValueProto(**{field: value}).SerializeToString()
                except (UnicodeEncodeError, ValueError):  # a lone surrogate: Feast's behaviour
                    return None
            out.append(raw)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def _timestamps(values: Sequence[Any]) -> list[bytes] | None:
    """``unix_timestamp_val`` of datetimes (naive ones are UTC, as in Feast): the whole seconds *at or
    before* the instant. Feast's ``int(value.timestamp())`` rounds toward zero, which puts an instant
    before 1970 with a fraction of a second in the *next* second (and goes through a float, which loses
    microseconds far from 1970): the served value would then differ from the source and from the history.
    None when a value is not a datetime (Feast decides)."""
    out: list[bytes] = []
    for value in values:
        if value is None:
            out.append(b"")
        elif isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
            out.append(ValueProto(unix_timestamp_val=(moment - _EPOCH) // _SECOND).SerializeToString())
        else:
            return None
    return out


def _exactly(value: Any, kind: type) -> bool:
    """``type(value) is kind`` (subclasses such as bool for int are Feast's to judge)."""
    return type(value) is kind
