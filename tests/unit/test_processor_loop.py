"""The loop's contract, with a fake consumer: commit only after every sink flushed; on failure, rewind."""

from typing import Any

from confluent_kafka import TopicPartition

from featurectl.settings import Settings
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

    def subscribe(self, topics: list[str], on_assign: Any = None) -> None:
        self.topics = topics
        if on_assign:
            on_assign(self, [])

    def consume(self, num: int, timeout: float) -> list[Any]:
        if self.seeks:  # a rewind re-delivers the last batch
            self.seeks.clear()
            return self.delivered
        if not self.batches:
            self.stop.set()
            return []
        self.delivered = self.batches.pop(0)
        return self.delivered

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
