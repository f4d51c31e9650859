"""Feast's entity key bytes (``serialize_entity_key``, version 3), built directly for common keys.

Feast builds a protobuf per key value and then serialises it field by field: about 35 us per entity,
paid for every row the processor writes. For join keys that are Python ints declared INT64/INT32 or
str declared STRING, this builds the same bytes with ``struct`` (layout from
feast/infra/key_encoding_utils.py: key count, then per sorted join key its name, then per value its
type, length and bytes). Anything else returns None and the caller uses Feast's serialiser; the two
are held byte-equal by tests/unit/test_entity_keys.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from feast.protos.feast.types.Value_pb2 import ValueType as WireType
from feast.value_type import ValueType

# The type tags Feast writes: the protobuf enum's numbers (feast.value_type.ValueType is a plain Enum).
_STRING = struct.pack("<I", WireType.STRING)
_INT64 = struct.pack("<I", WireType.INT64)
_INT32 = struct.pack("<I", WireType.INT32)
_EIGHT = struct.pack("<I", 8)
_FOUR = struct.pack("<I", 4)


def fast_entity_key(keys: Mapping[str, Any], types: Mapping[str, ValueType]) -> bytes | None:
    """The version-3 entity key of ``keys``, or None when a value is not a plain int or str of its type."""
    names = sorted(keys)
    out = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode("utf8")
        out += (_STRING, struct.pack("<I", len(encoded)), encoded)
    for name in names:
        value, kind = keys[name], types.get(name)
        if type(value) is int and kind == ValueType.INT64 and -(2**63) <= value < 2**63:
            out += (_INT64, _EIGHT, struct.pack("<q", value))
        elif type(value) is int and kind == ValueType.INT32 and -(2**31) <= value < 2**31:
            out += (_INT32, _FOUR, struct.pack("<i", value))
        elif type(value) is str and kind == ValueType.STRING:
            try:
                raw = value.encode("utf8")
            except UnicodeEncodeError:  # a lone surrogate: let Feast's serialiser say what it does
                return None
            out += (_STRING, struct.pack("<I", len(raw)), raw)
        else:
            return None
    return b"".join(out)


def key_encoder(
    join_keys: Sequence[str], types: Mapping[str, ValueType]
) -> Callable[[Sequence[Any]], bytes | None]:
    """``fast_entity_key`` for key tuples in ``join_keys`` order, for a lookup plan's reads (serving/lookup.py):
    with one join key, its name's bytes are built once and only the value per key (a tenth of the time, on
    100-entity lookups a tenth of a millisecond saved). Same bytes, same None as ``fast_entity_key``."""
    if len(join_keys) != 1 or types.get(join_keys[0]) not in (
        ValueType.INT64,
        ValueType.INT32,
        ValueType.STRING,
    ):
        names = tuple(join_keys)
        return lambda key: fast_entity_key(dict(zip(names, key, strict=True)), types)
    name = join_keys[0].encode("utf8")
    head = struct.pack("<I", 1) + _STRING + struct.pack("<I", len(name)) + name
    kind = types[join_keys[0]]
    if kind in (ValueType.INT64, ValueType.INT32):
        wide = kind == ValueType.INT64
        prefix = head + (_INT64 + _EIGHT if wide else _INT32 + _FOUR)
        pack = struct.Struct("<q" if wide else "<i").pack
        bound = 2**63 if wide else 2**31

        def encode_int(key: Sequence[Any]) -> bytes | None:
            value = key[0]
            if type(value) is not int or not -bound <= value < bound:
                return None
            return prefix + pack(value)

        return encode_int
    string = head + _STRING
    length = struct.Struct("<I").pack

    def encode_string(key: Sequence[Any]) -> bytes | None:
        value = key[0]
        if type(value) is not str:
            return None
        try:
            raw = value.encode("utf8")
        except UnicodeEncodeError:  # a lone surrogate: let Feast's serialiser say what it does
            return None
        return string + length(len(raw)) + raw

    return encode_string
