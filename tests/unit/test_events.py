import json
from dataclasses import dataclass

import pytest

from streams.events import DecodeError, _json, decode, decode_marker


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


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 123456789012345678901234567890, "b": -0.0, "c": 1e308, "d": 5e-324}',
        b'{"nan": NaN, "inf": Infinity, "ninf": -Infinity, "big": 1e400}',  # json only
        b'{"s": "\\ud800 lone surrogate", "u": "\\u00fc\\ud83d\\ude00", "dup": 1, "dup": 2}',
        '{"text": "ü 😀"}',
        b'[1, 2.5, null, true, "x"]',
    ],
)
def test_fast_json_decoding_equals_the_standard_library(raw: bytes | str) -> None:
    fast = _json(raw, "value", "t[0] offset=0")
    assert repr(fast) == repr(json.loads(raw))  # repr: NaN != NaN, and -0.0 == 0.0


def test_invalid_json_is_still_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        _json(b'{"a": ', "value", "t[0] offset=0")


def test_a_change_names_its_transaction_by_xid_whatever_lsn_debezium_appends() -> None:
    # As seen from Debezium 3.x on PostgreSQL: the id carries each event's own LSN (DBZ-5329).
    value = json.loads(envelope("u", {"id": 1}, {"id": 1}))
    value["transaction"] = {"id": "739:26540176", "total_order": 2, "data_collection_order": 1}
    event = decode(Msg(b'{"id": 1}', json.dumps(value).encode()))
    assert event.txn == ("739", 2)
    end = decode_marker(Msg(None, b'{"status": "END", "id": "739:26540400", "event_count": 2}'))
    assert (end.status, end.id, end.event_count) == ("END", "739", 2)
    assert decode(Msg(b'{"id": 1}', envelope("r", None, {"id": 1}))).txn is None  # a snapshot read has none


@pytest.mark.parametrize(
    "raw",
    [b'{"status": "END", "id": "1:2"}', b'{"status": "COMMIT", "id": "1"}', b'{"op": "c"}', b"[]"],
)
def test_a_message_on_the_transaction_topic_that_is_no_marker_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="not a Debezium transaction marker"):
        decode_marker(Msg(None, raw))
