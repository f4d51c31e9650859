from typing import Any

import pytest
from feast.types import Float64, Int64, String, UnixTimestamp

from stores.sink import DELETE, UPSERT
from streams.pipeline import Pipeline
from streams.routes import Route
from tests.unit.fakes import MemoryDeadLetters, MemorySink, Msg, change, customer
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator

ROUTE = Route(
    "customer_profile",
    "public.customers",
    (("customer_id", "id"),),
    (
        ("country", String),
        ("segment", String),
        ("credit_limit", Float64),
        ("birth_date", UnixTimestamp),
        ("email", String),
    ),
    (("customer_id", Int64),),
    pii=(("email", "hash"), ("full_name", "mask")),  # as feature_repo/customers.py declares
)


@pytest.fixture(scope="module")
def validator() -> BatchValidator:
    return BatchValidator(SuiteStore(SUITES_DIR))


@pytest.fixture
def parts(validator: BatchValidator) -> tuple[Pipeline, MemorySink, MemorySink, MemoryDeadLetters]:
    online, offline, dead = MemorySink(), MemorySink(), MemoryDeadLetters()
    pipe = Pipeline(online, offline, dead, validator, routes={"public.customers": [ROUTE]})  # type: ignore[arg-type]
    return pipe, online, offline, dead


def test_create_update_delete_and_tombstone(parts: Any) -> None:
    pipe, online, offline, _ = parts
    stats = pipe.process(
        [
            change(0, "c", 1, customer(1)),
            change(1, "u", 1, customer(1, segment="silver"), customer(1)),
            change(2, "d", 1, None, customer(1, segment="silver")),
            Msg("shop.public.customers", 0, 3, b'{"id": 1}', None),  # tombstone
        ]
    )
    assert pipe.flush() >= 1
    assert (stats.rows, stats.skipped, stats.dead_letters) == (3, 1, 0)
    assert [(r.op, r.cdc_op) for r in offline.written] == [(UPSERT, "c"), (UPSERT, "u"), (DELETE, "d")]
    assert (
        offline.written[1].features["segment"] == "silver"
        and offline.written[1].features["credit_limit"] == 10.0
    )
    assert online.live_keys("customer_profile") == []


def test_invalid_and_undecodable_records_become_dead_letters_and_the_rest_goes_on(parts: Any) -> None:
    pipe, online, _, dead = parts
    garbage = Msg("shop.public.customers", 0, 9, b"x", b"\x00garbage")
    stats = pipe.process(
        [
            garbage,
            change(1, "c", 2, customer(2, segment="vip", credit_limit="-1.00")),
            change(2, "c", 3, customer(3)),
        ]
    )
    pipe.flush()
    assert stats.dead_letters == 2 and stats.rows == 1
    reasons = {m.offset(): (reason, failed, view) for m, reason, failed, view, _ in dead.flushed}
    assert "not a Debezium change event" in reasons[9][0] and reasons[9][2] is None
    assert reasons[1][2] == "customer_profile"
    assert {f["expectation"] for f in reasons[1][1]} == {
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_between",
    }
    assert online.live_keys("customer_profile") == [{"customer_id": 3}]


def test_tables_without_a_feature_view_are_skipped(parts: Any) -> None:
    pipe, _, _, _ = parts
    msg = change(0, "c", 1, customer(1))
    msg.v = msg.v.replace(b'"table": "customers"', b'"table": "heartbeat"')  # type: ignore[union-attr]
    assert pipe.process([msg]).skipped == 1


def truncate_at(lsn: int) -> Msg:
    """A TRUNCATE of customers (no key) at ``lsn``, on partition 1."""
    source = f'{{"schema": "public", "table": "customers", "ts_ms": 2, "lsn": {lsn}}}'
    return Msg(
        "shop.public.customers",
        1,
        0,
        None,
        f'{{"op": "t", "before": null, "after": null, "source": {source}}}'.encode(),
    )


def test_truncate_deletes_every_live_entity(parts: Any) -> None:
    pipe, online, offline, _ = parts
    pipe.process([change(0, "c", 1, customer(1)), change(1, "c", 2, customer(2))])
    pipe.flush()
    truncate = truncate_at(5000)
    pipe.process([truncate, change(2, "c", 3, customer(3), lsn=6000)])
    pipe.flush()
    assert online.live_keys("customer_profile") == [{"customer_id": 3}]
    assert sorted(r.keys["customer_id"] for r in offline.written if r.cdc_op == "t") == [1, 2]
    # A change from before the truncate, queued on another partition, arrives late: it stays out.
    pipe.process([change(3, "c", 4, customer(4), partition=2, lsn=4000)])
    pipe.flush()
    assert online.live_keys("customer_profile") == [{"customer_id": 3}]


def test_a_view_without_a_suite_dead_letters_its_rows(tmp_path: Any) -> None:
    online, offline, dead = MemorySink(), MemorySink(), MemoryDeadLetters()
    pipe = Pipeline(
        online,
        offline,
        dead,
        BatchValidator(SuiteStore(tmp_path)),  # type: ignore[arg-type]
        routes={"public.customers": [ROUTE]},
    )
    pipe.process([change(0, "c", 1, customer(1))])
    pipe.flush()
    assert online.written == [] and "no expectation suite" in dead.flushed[0][1]


def test_a_change_after_the_truncate_read_before_it_in_the_batch_is_written_after_it(parts: Any) -> None:
    """One batch holds another partition's change committed *after* the truncate ahead of the truncate
    itself: it is neither written next to the rows the truncate removes nor deleted by it offline."""
    pipe, online, offline, _ = parts
    pipe.process([change(0, "c", 1, customer(1), lsn=1000)])
    pipe.flush()
    truncate = truncate_at(5000)
    pipe.process([change(1, "c", 7, customer(7), partition=2, lsn=6000), truncate])
    pipe.flush()
    assert online.live_keys("customer_profile") == [{"customer_id": 7}]
    assert sorted(r.keys["customer_id"] for r in offline.written if r.cdc_op == "t") == [1]
    # In the online store's history, 7 came only after 1 was gone.
    assert [(r.keys["customer_id"], r.op) for r in online.written] == [(1, UPSERT), (1, DELETE), (7, UPSERT)]


def test_only_the_last_change_of_a_transaction_reaches_the_history(parts: Any) -> None:
    """Two updates of one customer in one transaction (one commit time): history gets the last only,
    in one batch or when the earlier is re-delivered after the last was applied."""
    pipe, online, offline, _ = parts
    when = 1_700_000_100_000
    first = change(0, "u", 1, customer(1, segment="silver"), lsn=500, commit_ms=when)
    last = change(1, "u", 1, customer(1, segment="gold"), lsn=600, commit_ms=when)
    pipe.process([first, last])
    pipe.flush()
    pipe.process([first])  # re-delivered (say, the batch was retried from an earlier offset)
    pipe.flush()
    assert [r.features["segment"] for r in offline.written] == ["gold"]
    assert online.live_keys("customer_profile") == [{"customer_id": 1}]
