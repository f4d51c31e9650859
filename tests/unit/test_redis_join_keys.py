"""The Redis sink's stored join keys (``_jk:<view>``, read back by TRUNCATE and ``live_keys``) read back
exactly as the ``json.dumps`` text the sink stored before msgspec did the usual cases."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from stores.redis.sink import _join_keys


@pytest.mark.parametrize(
    "keys",
    [
        {"customer_id": 7},
        {"customer_id": -(2**70), "region": "eu"},
        {"sku": 'ü \u2028 " \\ \x00'},
        {"sku": "\ud800"},  # a lone surrogate: msgspec refuses, json escapes
        {"day": date(2026, 11, 26), "at": datetime(2026, 11, 26, 12, tzinfo=UTC)},
        {"amount": Decimal("1.10"), "flag": True, "ratio": 0.5},
    ],
)
def test_join_keys_read_back_as_json_dumps_stored_them(keys: dict[str, Any]) -> None:
    assert json.loads(_join_keys(keys)) == json.loads(json.dumps(keys, default=str))
