import json
from dataclasses import dataclass

import pytest

from streams.events import DecodeError, decode


@dataclass
class Msg:
    k: bytes | None
    v: bytes | None

    def topic(self) -> str:
        return "shop.public.orders"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def envelope(op: str, before: dict | None, after: dict | None) -> bytes:
    return json.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": 2,
            "source": {
                "ts_ms": 1,
                "lsn": 100,
                "txId": 7,
                "schema": "public",
                "table": "orders",
                "snapshot": "false",
            },
        }
    ).encode()


def test_update_keeps_before_after_and_source() -> None:
    e = decode(Msg(b'{"id": 5}', envelope("u", {"id": 5, "status": "a"}, {"id": 5, "status": "b"})))
    assert (e.op, e.key, e.before, e.after) == (
        "u",
        {"id": 5},
        {"id": 5, "status": "a"},
        {"id": 5, "status": "b"},
    )
    assert (e.source_ts_ms, e.lsn, e.tx_id, e.table, e.snapshot) == (1, 100, 7, "public.orders", None)
    assert e.where == "shop.public.orders[2] offset=41"


def test_tombstone_is_a_null_value_with_the_key() -> None:
    e = decode(Msg(b'{"id": 5}', None))
    assert e.is_tombstone and e.key == {"id": 5} and e.after is None


@pytest.mark.parametrize("value", [b"\x00garbage", b"[1, 2]", b'{"op": "x"}', b'{"after": {}}'])
def test_not_debezium_is_a_decode_error_naming_the_offset(value: bytes) -> None:
    with pytest.raises(DecodeError, match=r"shop.public.orders\[2\] offset=41"):
        decode(Msg(b'{"id": 1}', value))
