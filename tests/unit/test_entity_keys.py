"""The directly built entity key bytes equal Feast's serialiser's, for every key they handle."""

from __future__ import annotations

import random

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from hypothesis import given, settings
from hypothesis import strategies as st

from stores.keys import fast_entity_key, key_encoder


def feast_key(keys: dict[str, object], types: dict[str, ValueType]) -> bytes:
    names = sorted(keys)
    values = [python_values_to_proto_values([keys[k]], types[k])[0] for k in names]
    return serialize_entity_key(EntityKeyProto(join_keys=names, entity_values=values), 3)


def test_int_and_string_keys_single_and_composite_equal_feasts_bytes() -> None:
    rng = random.Random(7)
    texts = ["", "a", "ü", "😀 x", "a" * 300, "k-1", "\x00"]
    ints = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 123456789012]
    cases = 0
    for _ in range(2000):
        n = rng.choice([1, 1, 2, 3])
        names = rng.sample(["customer_id", "b", "z_key", "tenant", "ü_name"], n)
        types = {k: rng.choice([ValueType.INT64, ValueType.STRING, ValueType.INT32]) for k in names}
        keys: dict[str, object] = {}
        for k in names:
            if types[k] == ValueType.STRING:
                keys[k] = rng.choice(texts)
            elif types[k] == ValueType.INT32:
                keys[k] = rng.choice([0, 7, -(2**31), 2**31 - 1])
            else:
                keys[k] = rng.choice(ints)
        fast = fast_entity_key(keys, types)
        assert fast is not None and fast == feast_key(keys, types), (keys, types)
        cases += 1
    assert cases == 2000


def test_values_it_does_not_handle_go_to_feasts_serialiser() -> None:
    assert fast_entity_key({"id": True}, {"id": ValueType.INT64}) is None  # a bool is not an int key
    assert fast_entity_key({"id": 2**63}, {"id": ValueType.INT64}) is None  # out of range: Feast decides
    assert fast_entity_key({"id": "7"}, {"id": ValueType.INT64}) is None
    assert fast_entity_key({"id": b"x"}, {"id": ValueType.BYTES}) is None
    assert fast_entity_key({"id": "\ud800"}, {"id": ValueType.STRING}) is None


@settings(max_examples=400, deadline=None)
@given(
    name=st.text(min_size=1, max_size=12),
    kind=st.sampled_from([ValueType.INT64, ValueType.INT32, ValueType.STRING]),
    value=st.one_of(st.integers(min_value=-(2**64), max_value=2**64), st.text(), st.booleans(), st.floats()),
)
def test_a_plans_key_encoder_gives_fast_entity_keys_bytes_or_none(
    name: str, kind: ValueType, value: object
) -> None:
    """The lookup plan's encoder (names built once) is fast_entity_key: the same bytes, None for the same values
    (another type, out of range, a lone surrogate), so a key it cannot build goes to Feast's read as before."""
    encoded = key_encoder([name], {name: kind})((value,))
    assert encoded == fast_entity_key({name: value}, {name: kind})
    if encoded is not None:
        assert encoded == feast_key({name: value}, {name: kind})


def test_a_composite_keys_encoder_orders_names_as_feast_does() -> None:
    types = {"z_key": ValueType.STRING, "customer_id": ValueType.INT64}
    encoder = key_encoder(["z_key", "customer_id"], types)
    assert encoder(("a", 7)) == feast_key({"z_key": "a", "customer_id": 7}, types)
    assert encoder(("a", "7")) is None
