"""The loop's contract, with a fake consumer: commit only after every sink flushed; on failure, rewind."""

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from core.settings import Settings
from streams.pipeline import Pipeline
from streams.processor import Processor, ProcessorConfig
from tests.unit.fakes import MemoryDeadLetters, MemorySink, change, customer
from tests.unit.test_pipeline import ROUTE
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator


class FakeConsumer:
    def __init__(self, batches: list[list[Any]], stop: Any) -> None:
        self.batches, self.stop = batches, stop
        self.commits: list[list[TopicPartition]] = []
        self.seeks: list[TopicPartition] = []
        self.closed = False
        self.delivered: list[Any] = []
        self.assignments: list[list[TopicPartition]] = []
        self.committed_at: dict[int, int] = {}  # partition -> the group's committed offset
        self.earliest = 0  # the first offset each partition still holds
        self.reassign: list[TopicPartition] = []  # lost, then assigned back, at the next consume
        self.broker_down = False  # committed() fails

    def subscribe(
        self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None
    ) -> None:
        self.topics, self.on_assign, self.on_lost = topics, on_assign, on_lost
        if on_assign:
            on_assign(self, [])

    def consume(self, num: int, timeout: float) -> list[Any]:
        if self.reassign:  # the group dropped this copy, which rejoined and got its partitions back
            self.on_lost(self, self.reassign)
            self.on_assign(self, self.reassign)
            self.reassign = []
        if self.seeks:  # a rewind re-delivers the last batch
            self.seeks.clear()
            return self.delivered
        if not self.batches:
            self.stop.set()
            return []
        self.delivered = self.batches.pop(0)
        return self.delivered

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assignments.append(partitions)

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.broker_down:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return [
            TopicPartition(p.topic, p.partition, self.committed_at.get(p.partition, -1001))
            for p in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        return self.earliest, 100

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(offsets)

    def close(self) -> None:
        self.closed = True


class TestProcessor(Processor):
    def __init__(self, pipeline: Pipeline, consumer: FakeConsumer) -> None:
        super().__init__(
            Settings(dlq_topic="dlq.test"),
            store=None,
            config=ProcessorConfig("shop", "g", 10, 0.0),  # type: ignore[arg-type]
            pipeline=pipeline,
        )
        self.fake = consumer

    def _consumer(self) -> Any:
        return self.fake

    def refresh_routes(self, force: bool = False) -> None:
        self.pipeline.routes = {"public.customers": [ROUTE]}


def run(online: MemorySink) -> tuple[FakeConsumer, MemorySink]:
    import threading

    stop = threading.Event()
    offline = MemorySink()
    pipeline = Pipeline(online, offline, MemoryDeadLetters(), BatchValidator(SuiteStore(SUITES_DIR)))  # type: ignore[arg-type]
    consumer = FakeConsumer(
        [
            [change(0, "c", 1, customer(1)), change(1, "c", 2, customer(2), partition=1)],
            [change(2, "u", 1, customer(1, segment="silver"))],
        ],
        stop,
    )
    proc = TestProcessor(pipeline, consumer)
    proc.run(stop)
    return consumer, offline


def test_offsets_are_committed_after_the_sinks_flushed() -> None:
    online = MemorySink()
    consumer, _ = run(online)
    committed = [sorted((tp.topic, tp.partition, tp.offset) for tp in c) for c in consumer.commits]
    assert committed == [
        [("shop.public.customers", 0, 1), ("shop.public.customers", 1, 2)],
        [("shop.public.customers", 0, 3)],
    ]
    assert consumer.closed
    assert sorted(r.keys["customer_id"] for r in online.written) == [1, 1, 2]


def test_a_failing_sink_means_no_commit_and_the_batch_is_read_again() -> None:
    online = MemorySink(fail_flushes=1)  # the first batch's flush fails once
    consumer, offline = run(online)
    assert len(consumer.commits) == 2  # nothing committed for the failed attempt
    assert sorted(r.keys["customer_id"] for r in online.written) == [1, 1, 2]  # all rows, after the retry
    assert sum(r.cdc_op == "c" for r in offline.written) >= 2


class PoisonSink(MemorySink):
    """A store that can never write one entity (say, a timestamp it cannot represent)."""

    def __init__(self, poison_id: int) -> None:
        super().__init__()
        self.poison_id = poison_id

    def flush(self) -> list[Any]:
        if any(r.keys.get("customer_id") == self.poison_id for r in self.pending):
            raise ValueError("year 12000 is out of range")
        return super().flush()


def test_a_poison_record_goes_to_the_dead_letters_and_everything_else_is_written_and_committed() -> None:
    import threading

    stop = threading.Event()
    online, dead = PoisonSink(poison_id=2), MemoryDeadLetters()
    pipeline = Pipeline(online, MemorySink(), dead, BatchValidator(SuiteStore(SUITES_DIR)))  # type: ignore[arg-type]
    consumer = FakeConsumer(
        [
            [change(i, "c", i + 1, customer(i + 1)) for i in range(6)],  # customer 2 is poison
            [change(6, "u", 1, customer(1, segment="silver"))],  # and the stream goes on after it
        ],
        stop,
    )
    TestProcessor(pipeline, consumer).run(stop)
    assert sorted(r.keys["customer_id"] for r in online.written) == [1, 1, 3, 4, 5, 6]
    ((msg, reason, _, _, _),) = dead.flushed
    assert msg.offset() == 1 and "ValueError: year 12000 is out of range" in reason
    assert [max(tp.offset for tp in c) for c in consumer.commits] == [6, 7]  # both batches committed


def test_a_transient_failure_is_retried_not_dead_lettered() -> None:
    online = MemorySink(fail_flushes=3)  # OSError: a full disk is not the record's fault
    consumer, _ = run(online)
    assert len(consumer.commits) == 2
    assert sorted(r.keys["customer_id"] for r in online.written) == [1, 1, 2]


def test_replay_isolates_a_dead_letter_that_still_cannot_be_written_keeping_its_view_and_attempt() -> None:
    from streams.isolate import write_isolating

    online, dead = PoisonSink(poison_id=2), MemoryDeadLetters()
    pipeline = Pipeline(
        online,
        MemorySink(),
        dead,  # type: ignore[arg-type]
        BatchValidator(SuiteStore(SUITES_DIR)),
        routes={"public.customers": [ROUTE]},
    )
    letters = [change(i, "c", i + 1, customer(i + 1)) for i in range(4)]

    def replayed(messages: Any) -> Any:
        return pipeline.process(messages, only_view="customer_profile", attempt=3)

    stats, applied = write_isolating(pipeline, letters, replayed, "customer_profile", 3)
    assert (stats.dead_letters, applied) == (1, 3)
    ((msg, reason, _, view, attempt),) = dead.flushed
    assert (msg.offset(), view, attempt) == (1, "customer_profile", 3) and "ValueError" in reason


def test_a_registry_caught_mid_rewrite_is_a_transient_failure_not_a_poison_record() -> None:
    from google.protobuf.message import DecodeError

    from streams.faults import is_transient

    assert is_transient(DecodeError("Error parsing message"))  # retried, never dead-lettered
    assert not is_transient(ValueError("year 12000 is out of range"))


class StalledSink(MemorySink):
    """The first flush finds partition 0 claimed by another copy since (this one stalled mid-batch)."""

    def __init__(self, consumer: list[FakeConsumer]) -> None:
        super().__init__()
        self.consumer = consumer

    def flush(self) -> list[Any]:
        if not self.fences.get(("shop.public.customers", 9)):
            self.fences[("shop.public.customers", 9)] = 1  # flushed once: fence the next one only
            self.claim([("shop.public.customers", 0)], "another copy")
            self.consumer[0].reassign = [TopicPartition("shop.public.customers", 0)]
        return super().flush()


def test_a_fenced_batch_reaches_no_sink_and_is_not_committed_until_its_partitions_are_claimed_again() -> None:
    import threading

    stop = threading.Event()
    holder: list[FakeConsumer] = []
    online, offline, dead = StalledSink(holder), MemorySink(), MemoryDeadLetters()
    pipeline = Pipeline(online, offline, dead, BatchValidator(SuiteStore(SUITES_DIR)))  # type: ignore[arg-type]
    consumer = FakeConsumer(
        [[change(0, "c", 1, customer(1)), change(1, "c", 2, customer(2), partition=1)]],
        stop,
    )
    holder.append(consumer)
    proc = TestProcessor(pipeline, consumer)
    proc.run(stop)
    # The fenced attempt wrote nothing anywhere; the batch went in once, after the copy claimed anew.
    assert [sorted(r.keys["customer_id"] for r in sink.written) for sink in (online, offline)] == [
        [1, 2],
        [1, 2],
    ]
    assert len(consumer.commits) == 1
    assert proc.claims.epochs[("shop.public.customers", 0)] == 3


def test_changes_deleted_by_retention_before_the_group_read_them_stop_the_processor_naming_them() -> None:
    import threading

    import pytest

    from core.errors import RetentionGapError

    stop = threading.Event()
    online = MemorySink()
    pipeline = Pipeline(online, MemorySink(), MemoryDeadLetters(), BatchValidator(SuiteStore(SUITES_DIR)))  # type: ignore[arg-type]
    consumer = FakeConsumer([[change(50, "c", 1, customer(1))]], stop)
    consumer.committed_at, consumer.earliest = {0: 7}, 40  # offsets 7..39 were deleted unread
    consumer.reassign = [TopicPartition("shop.public.customers", 0)]
    with pytest.raises(RetentionGapError) as caught:
        TestProcessor(pipeline, consumer).run(stop)
    assert "shop.public.customers[0]: changes from offset 7 to 39 are gone" in str(caught.value)
    assert "--accept-gaps" in str(caught.value) and "verify --repair" in str(caught.value)
    assert online.written == [] and consumer.commits == []


def test_start_offsets_start_where_the_group_left_off_or_report_the_gap() -> None:
    from confluent_kafka import OFFSET_BEGINNING

    from streams.offsets import start_offsets

    t = "shop.public.customers"
    starts, gaps = start_offsets(
        [
            TopicPartition(t, 0, 12),
            TopicPartition(t, 1, -1001),
            TopicPartition(t, 2, -1001),
            TopicPartition(t, 3, 3),
        ],
        [0, 0, 5, 9],
    )
    assert [s.offset for s in starts] == [12, OFFSET_BEGINNING, 5, 9]
    assert [(g.partition, g.committed, g.earliest) for g in gaps] == [(2, None, 5), (3, 3, 9)]


def test_a_failed_start_offset_check_assigns_from_the_committed_offsets_instead_of_crashing() -> None:
    import threading

    stop = threading.Event()
    online = MemorySink()
    pipeline = Pipeline(online, MemorySink(), MemoryDeadLetters(), BatchValidator(SuiteStore(SUITES_DIR)))  # type: ignore[arg-type]
    consumer = FakeConsumer([[change(0, "c", 1, customer(1))]], stop)
    consumer.broker_down = True
    consumer.reassign = [TopicPartition("shop.public.customers", 0)]
    TestProcessor(pipeline, consumer).run(stop)
    assert [tp.offset for tp in consumer.assignments[-1]] == [-1001]  # OFFSET_INVALID: the committed one
    assert [r.keys["customer_id"] for r in online.written] == [1]


def test_watermarks_of_a_partition_without_a_leader_yet_are_retried_until_it_has_one() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from streams.offsets import watermarks

    class NewTopic:
        """A topic auto-created a moment ago: its partition has no leader for the first queries."""

        def __init__(self) -> None:
            self.queries = 0

        def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
            self.queries += 1
            if self.queries < 3:
                raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
            return (0, 4)

    consumer = NewTopic()
    assert watermarks(consumer, TopicPartition("featurectl.dlq", 0), timeout_s=10) == (0, 4)  # type: ignore[arg-type]
    assert consumer.queries == 3


def test_watermarks_raise_an_error_that_waiting_cannot_fix_at_once() -> None:
    import pytest
    from confluent_kafka import KafkaError, KafkaException

    from streams.offsets import watermarks

    class Refusing:
        def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException):
        watermarks(Refusing(), TopicPartition("featurectl.dlq", 0), timeout_s=30)  # type: ignore[arg-type]


def test_a_batch_retried_because_the_dead_letters_failed_adds_no_history_row_twice(
    fresh_store: Any,
) -> None:
    import threading

    import pyarrow.dataset as ds

    from core.errors import TransientError
    from stores.history.sink import HistorySink

    class FailingDeadLetters(MemoryDeadLetters):
        """A dead-letter topic that refuses the first two flushes (after the stores have written)."""

        failures = 2

        def flush(self) -> int:
            if self.pending and self.failures:
                self.failures -= 1
                raise TransientError("could not write 1 record(s) to dead-letter topic", "retried")
            return super().flush()

    stop = threading.Event()
    offline, dead = HistorySink(fresh_store), FailingDeadLetters()
    pipeline = Pipeline(MemorySink(), offline, dead, BatchValidator(SuiteStore(SUITES_DIR)))  # type: ignore[arg-type]
    consumer = FakeConsumer(
        [
            [change(0, "c", 1, customer(1)), change(1, "c", 2, customer(2, segment="vip"))],
            [change(2, "u", 1, customer(1, segment="silver"))],
        ],
        stop,
    )
    TestProcessor(pipeline, consumer).run(stop)
    assert len(consumer.commits) == 2 and len(dead.flushed) == 1  # retried twice, then written
    directory = offline.directory(fresh_store.get_feature_view("customer_profile"))
    history = ds.dataset(str(directory)).to_table(columns=["customer_id", "segment"]).to_pylist()
    assert sorted((r["customer_id"], r["segment"]) for r in history) == [(1, "gold"), (1, "silver")]


class TransactionalMemorySink(MemorySink):
    @property
    def keeps_transactions(self) -> bool:
        return True


class KafkaAwayConsumer(FakeConsumer):
    """Its topic metadata lookup fails (each one waits its timeout on a real client)."""

    def __init__(self) -> None:
        import threading

        super().__init__([], threading.Event())
        self.lookups = 0

    def list_topics(self, timeout: float) -> Any:
        from confluent_kafka import KafkaError, KafkaException

        self.lookups += 1
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))


def test_with_kafka_away_the_partition_lookup_for_cutting_batches_is_not_repeated_before_every_batch(
    monkeypatch: Any,
) -> None:
    """Cutting a batch between transactions needs the topics' partitions (streams/cut.py); with Kafka away the
    lookup fails after waiting, so it is tried again only after LOOK_AGAIN_S, not before each batch."""
    import streams.processor

    pipeline = Pipeline(
        TransactionalMemorySink(),
        MemorySink(),
        MemoryDeadLetters(),
        BatchValidator(SuiteStore(SUITES_DIR)),  # type: ignore[arg-type]
    )
    consumer = KafkaAwayConsumer()
    proc = TestProcessor(pipeline, consumer)
    clock = [1000.0]
    monkeypatch.setattr(streams.processor.time, "monotonic", lambda: clock[0])
    for _ in range(5):
        assert not proc._sees_whole_transactions(consumer)  # type: ignore[arg-type]
    assert consumer.lookups == 1
    clock[0] += streams.processor.LOOK_AGAIN_S
    assert not proc._sees_whole_transactions(consumer)  # type: ignore[arg-type]
    assert consumer.lookups == 2


class SeekLoggingConsumer(FakeConsumer):
    def __init__(self, batches: list[list[Any]], stop: Any) -> None:
        super().__init__(batches, stop)
        self.seek_log: list[tuple[int, int]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seek_log.append((tp.partition, tp.offset))
        super().seek(tp)


@pytest.mark.parametrize("failures", [0, 1])
def test_a_full_batch_carries_the_changes_past_its_last_whole_transaction_into_the_next_one(
    failures: int,
) -> None:
    """Partition 0 has read transactions 1-4, partition 1 transactions 1-5, partition 2 only 5: the batch ends
    after transaction 3 (streams/cut.py), its commit names no carried offset, and the carried changes come
    first in the next batch. A failed flush rewinds every partition the batch or its carry read, partition 2
    (all carried) too, and nothing is lost or committed early."""
    import threading

    from tests.unit.test_cut import positioned

    stop = threading.Event()
    p0 = [positioned(o, 0, t, 1) for o, t in enumerate([1, 2, 3, 4])]
    p1 = [positioned(o, 1, t, 2) for o, t in enumerate([1, 2, 3, 4, 5])]
    p2 = [positioned(0, 2, 5, 3)]
    first = [p0[0], p1[0], p1[1], p0[1], p1[2], p0[2], p1[3], p2[0], p0[3], p1[4]]
    later = [positioned(o, 0, t, 1) for o, t in ((4, 5), (5, 6))]
    online = TransactionalMemorySink(fail_flushes=failures)
    pipeline = Pipeline(online, MemorySink(), MemoryDeadLetters(), BatchValidator(SuiteStore(SUITES_DIR)))  # type: ignore[arg-type]
    consumer = SeekLoggingConsumer([first, later], stop)
    proc = TestProcessor(pipeline, consumer)
    proc._sees_whole_transactions = lambda _consumer: True  # type: ignore[method-assign]
    proc.run(stop)
    committed = [sorted((tp.partition, tp.offset) for tp in c) for c in consumer.commits]
    assert committed == [[(0, 3), (1, 3)], [(0, 6), (1, 5), (2, 1)]]
    assert sorted({r.keys["customer_id"] for r in online.written}) == [1, 2, 3, 4, 5, 6]
    if failures:
        assert sorted(set(consumer.seek_log)) == [(0, 0), (1, 0), (2, 0)]
