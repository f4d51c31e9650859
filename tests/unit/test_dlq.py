"""Dead-letter records: what they keep, and a record too large for Kafka keeps a pointer instead."""

from __future__ import annotations

import hashlib
import json

from streams.dlq import MAX_RECORD_BYTES, DeadLetter


def letter(value: bytes) -> DeadLetter:
    return DeadLetter(
        "shop.public.docs", 2, 41, b'{"id": 7}', value, "cannot be written: ValueError: x", [], "docs", "now"
    )


def test_a_record_round_trips_with_its_original_message() -> None:
    back = DeadLetter.from_json(letter(b'{"op": "c"}').to_json())
    assert back.value == b'{"op": "c"}' and back.key == b'{"id": 7}' and not back.truncated
    assert (back.topic, back.partition, back.offset, back.feature_view) == ("shop.public.docs", 2, 41, "docs")


def test_an_oversized_original_is_truncated_with_a_pointer_and_fits_kafka() -> None:
    big = json.dumps({"op": "u", "after": {"body": "x" * 3_000_000}}).encode()
    raw = letter(big).to_json()
    assert len(raw) < MAX_RECORD_BYTES
    kept = json.loads(raw)["original"]["value_truncated"]
    assert kept["bytes"] == len(big) and kept["sha256"] == hashlib.sha256(big).hexdigest()
    assert kept["read_from"] == "shop.public.docs[2] offset=41"
    back = DeadLetter.from_json(raw)
    assert back.truncated and back.value is None and back.reason.startswith("cannot be written")
