"""A lookup of several views sees them as of one state of the store (serving/lookup.py, ``_read_all``): a source
transaction released between the reads of two views never shows one view before it and the other after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from feast import FeatureStore

from serving.lookup import Lookups
from stores.feast_layout import FeastLayoutSink
from stores.registry import kinds, open_online_sink
from stores.sink import UPSERT, SinkRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BODY = msgspec.json.encode(
    {
        "features": ["customer_profile:credit_limit", "product_details:price"],
        "entities": {"customer_id": [1, 2], "product_id": [1, 1]},
    }
)


def transfer(sink: FeastLayoutSink, n: int, value: float) -> None:
    """Source transaction ``n``: both customers' credit limits and the product's price set to ``value``, released
    whole by one flush (its changes, their rows and its END)."""
    txn = f"tx{n}"
    when = T0 + timedelta(seconds=n)
    rows = [
        SinkRow("customer_profile", UPSERT, {"customer_id": c}, {"country": "GB", "segment": "gold",
                "credit_limit": value, "birth_date": None, "email": "e"}, when, 100 * n, "u", f"c{c}@{n}",
                version_minor=c, txn=txn)
        for c in (1, 2)
    ] + [
        SinkRow("product_details", UPSERT, {"product_id": 1}, {"name": "p", "description": "d", "category": "c",
                "price": value, "in_stock": True, "tags": []}, when, 100 * n, "u", f"p1@{n}", version_minor=3,
                txn=txn)
    ]  # fmt: skip
    for row in rows:
        sink.add_seen(txn, row.version_minor, row.version)
    sink.add(rows)
    sink.add_end(txn, len(rows), n)
    sink.flush()


def values(payload: bytes) -> list[Any]:
    """Every feature value of the answer (entity columns left out)."""
    results = msgspec.json.decode(payload)["results"]
    return [v for column in results[2:] for v in column["values"]]


@pytest.mark.parametrize(
    "fresh_store", [k.name for k in kinds() if k.atomic_source_transactions], indirect=True
)
def test_a_transaction_released_between_two_view_reads_is_seen_whole(fresh_store: FeatureStore) -> None:
    sink: FeastLayoutSink = open_online_sink(fresh_store)  # type: ignore[assignment]
    try:
        sink.reset()
        sink.limit_transactions(True, max_rows=100, max_wait_s=600)
        transfer(sink, 1, 1.0)
        lookups = Lookups(fresh_store)
        answered = lookups.answer(BODY)
        assert answered is not None and values(answered[0]) == [1.0] * 4

        read = lookups._read
        reads = 0

        def release_after_the_first_view(*args: Any) -> Any:
            nonlocal reads
            found = read(*args)
            reads += 1
            if reads == 1:
                transfer(sink, 2, 2.0)  # lands between this view's read and the next one's
            return found

        lookups._read = release_after_the_first_view  # type: ignore[method-assign]
        answered = lookups.answer(BODY)
        assert answered is not None
        assert values(answered[0]) == [2.0] * 4, "one view read before the release, the other after"
        assert lookups.rereads == 1 and reads == 4
    finally:
        sink.close()


def test_releases_landing_between_every_read_refuse_the_request_rather_than_answer_half(
    sqlite_store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.lookup

    sink: FeastLayoutSink = open_online_sink(sqlite_store)  # type: ignore[assignment]
    try:
        sink.reset()
        sink.limit_transactions(True, max_rows=100, max_wait_s=600)
        transfer(sink, 1, 1.0)
        lookups = Lookups(sqlite_store)
        read = lookups._read
        released = iter(range(2, 1000))

        def release_after_every_view(*args: Any) -> Any:
            found = read(*args)
            n = next(released)
            transfer(sink, n, float(n))
            return found

        lookups._read = release_after_every_view  # type: ignore[method-assign]
        monkeypatch.setattr(serving.lookup, "SNAPSHOT_S", 0.2)
        with pytest.raises(serving.lookup.ReadsMovedError, match="retry it"):
            lookups.answer(BODY)
        assert lookups.rereads >= 2
    finally:
        sink.close()
