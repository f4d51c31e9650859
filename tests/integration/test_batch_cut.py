"""The processor cuts a batch between source transactions when it can (streams/cut.py), on the real Kafka: a
batch read while a transaction's END is still on its way waits for it, so the online store need not hold the
transaction's rows out of sight until the next batch."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import streams.processor
from streams.pipeline import Pipeline
from streams.processor import Processor, ProcessorConfig
from tests.integration.conftest import StackHandle
from tests.integration.helpers import unique
from tests.unit.fakes import MemoryDeadLetters, MemorySink, change, customer
from validation.suites import SUITES_DIR, SuiteStore
from validation.validator import BatchValidator


class AtomicMemorySink(MemorySink):
    @property
    def keeps_transactions(self) -> bool:
        return True


class EndAfterTheChange:
    """The real consumer; once a consume has returned the change, the END is produced (and acknowledged by
    the broker) before that consume returns: it reaches Kafka after the batch was cut."""

    def __init__(self, consumer: Consumer, producer: Producer, end: tuple[str, bytes]) -> None:
        self.consumer, self.producer, self.end = consumer, producer, end
        self.produced = False

    def consume(self, num: int, timeout: float) -> list[Message]:
        got = self.consumer.consume(num, timeout)
        if got and not self.produced:
            self.producer.produce(*self.end)
            assert self.producer.flush(30) == 0
            self.produced = True
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)


@pytest.mark.parametrize("members", [1, 2])
def test_a_batch_holding_a_change_waits_for_its_end_only_when_this_copy_reads_every_partition(
    stack: StackHandle, monkeypatch: pytest.MonkeyPatch, members: int
) -> None:
    """Alone in its group, the copy's batch holds the change and its END. With a second copy in the group (the
    topics' partitions split between them) it does not wait: no wait could make its batches whole."""
    settings = stack.settings
    prefix = unique("cut")
    data, txn = f"{prefix}.public.customers", f"{prefix}.transaction"
    admin = AdminClient(settings.kafka_client())
    for future in admin.create_topics([NewTopic(data, 2, 1), NewTopic(txn, 1, 1)]).values():
        future.result(30)
    # Generous here (the broker answers the consumer's waiting fetch within milliseconds of a produce): the
    # test is about whether the batch waits, not about how long.
    monkeypatch.setattr(streams.processor, "TOP_UP_WAIT_S", 2.0)
    group = unique("g")
    copies = []
    for _ in range(members):
        pipeline = Pipeline(
            AtomicMemorySink(),
            MemorySink(),
            MemoryDeadLetters(),
            BatchValidator(SuiteStore(SUITES_DIR)),  # type: ignore[arg-type]
        )
        processor = Processor(settings, None, ProcessorConfig(prefix, group), pipeline=pipeline)  # type: ignore[arg-type]
        consumer = processor._consumer()
        consumer.subscribe(
            [f"^{prefix}\\..*"], on_assign=processor._on_assign, on_revoke=processor._on_revoke
        )
        copies.append((processor, consumer))
    producer = Producer(settings.kafka_client())
    try:
        deadline = time.monotonic() + 120
        while sum(len(c.assignment()) for _, c in copies) < 3 or any(not c.assignment() for _, c in copies):
            assert time.monotonic() < deadline, "the group never assigned the topics' 3 partitions"
            for _, c in copies:
                assert not [m for m in c.consume(10, 0.2) if m.error() is None]  # nothing produced yet
        # The copy that reads a partition of the data topic gets the change there.
        processor, consumer = next(
            (p, c) for p, c in copies if any(tp.topic == data for tp in c.assignment())
        )
        partition = next(tp.partition for tp in consumer.assignment() if tp.topic == data)
        msg = change(0, "u", 1, customer(1))
        value = json.loads(msg.v or b"{}")
        value["transaction"] = {"id": "901:5000", "total_order": 1}
        producer.produce(data, json.dumps(value).encode(), msg.k, partition=partition)
        assert producer.flush(30) == 0
        end = json.dumps({"status": "END", "id": "901:5100", "event_count": 1}).encode()
        reader = EndAfterTheChange(consumer, producer, (txn, end))
        batch: list[Message] = []
        while not batch:
            assert time.monotonic() < deadline, "the change never reached the consumer"
            for p, c in copies:
                if p is not processor:
                    c.consume(10, 0.05)  # keeps the other copy in the group
            batch = [m for m in processor._next_batch(reader) if m.error() is None]  # type: ignore[arg-type]
        topics = [m.topic() for m in batch]
        assert reader.produced
        if members == 1:
            assert topics == [data, txn]  # cut after the END, not between the two
            assert list(processor.pipeline.decoded) == [
                (data, partition, 0)
            ]  # decoded once, for the pipeline
        else:
            assert topics == [data]
    finally:
        for _, c in copies:
            c.close()
        admin.delete_topics([data, txn])
