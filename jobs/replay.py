"""Listing and replaying the dead-letter topic (``featurectl dlq list|replay``).

Replay re-processes each dead letter through the same pipeline as the live stream, so its rows
are validated again with the current suites: rows that pass now reach the stores (an older
change never overwrites a newer one there), rows that still fail are dead-lettered again with
``attempt`` increased. A backfill's dead letter holds a row state and its event time, not a change
event: it goes back through the backfill's own writer (jobs/pg_backfill.py), into the history only. Replay reads up to the end of the topic as it was when it started, and
commits its own consumer group's offsets after the sinks flushed, so each dead letter is replayed
once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from core.errors import TransientError
from core.settings import Settings
from streams.dlq import DeadLetter
from streams.offsets import next_offsets, watermarks

if TYPE_CHECKING:
    from feast import FeatureStore

    from streams.events import KafkaMessage
    from streams.pipeline import BatchStats

logger = logging.getLogger(__name__)
REPLAY_GROUP = "featurectl-dlq-replay"


def _read_to_end(consumer: Consumer, topic: str, timeout_s: float = 30.0) -> Iterator[Message]:
    """Messages of ``topic`` from the consumer group's committed offsets (else the start) up to its end as
    of now.

    Partitions are assigned, not subscribed: no group join to wait for, and a partition with nothing
    left is known to be done from its offsets at once (librdkafka reports no position for a partition
    the application has consumed nothing from)."""
    try:
        meta = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise TransientError(
            f"cannot reach Kafka to read {topic}: {exc}", "check `featurectl stack status`"
        ) from None
    if topic not in meta.topics or meta.topics[topic].error is not None:
        return
    parts = [TopicPartition(topic, p) for p in sorted(meta.topics[topic].partitions)]
    committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    starts, ends = {}, {}
    for tp in parts:
        low, high = watermarks(consumer, tp)
        start = committed.get(tp.partition, -1)
        starts[tp.partition] = max(start, low) if start >= 0 else low
        ends[tp.partition] = high
    pending = {p for p in ends if starts[p] < ends[p]}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        partition, offset = msg.partition() or 0, msg.offset() or 0
        if offset < ends[partition]:
            yield msg
        if offset + 1 >= ends[partition]:
            pending.discard(partition)
    if pending:
        raise TransientError(
            f"could not read {topic} to its end within {timeout_s:.0f}s (partitions {sorted(pending)} unfinished)",
            "check `featurectl stack status` and retry",
        )


def list_dead_letters(settings: Settings, limit: int | None = None) -> list[tuple[Message, DeadLetter]]:
    consumer = Consumer(
        {
            **settings.kafka_client(),
            "enable.auto.commit": False,
            "group.id": f"featurectl-dlq-list-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        out = []
        for msg in _read_to_end(consumer, settings.dlq_topic):
            out.append((msg, DeadLetter.from_json(msg.value() or b"{}")))
            if limit is not None and len(out) >= limit:
                break
        return out
    finally:
        consumer.close()


def with_originals(settings: Settings, letters: list[DeadLetter]) -> list[DeadLetter]:
    """Dead letters whose value was too large to keep, with the original read from its source offset.

    One whose source no longer retains it is returned as it is; processing it then fails to decode,
    and it is dead-lettered again saying so.
    """
    if not any(letter.truncated for letter in letters):
        return letters
    consumer = Consumer(
        {
            **settings.kafka_client(),
            "group.id": f"featurectl-dlq-originals-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    out = []
    try:
        for letter in letters:
            if letter.truncated:
                consumer.assign([TopicPartition(letter.topic, letter.partition, letter.offset)])
                msg = consumer.poll(10)
                if msg is not None and msg.error() is None and msg.offset() == letter.offset:
                    letter = replace(letter, value=msg.value(), truncated=False)
                else:
                    logger.warning(
                        "%s[%s] offset=%s: the original of a truncated dead letter is no longer in its topic",
                        letter.topic,
                        letter.partition,
                        letter.offset,
                    )
            out.append(letter)
        return out
    finally:
        consumer.close()


@dataclass
class ReplayResult:
    replayed: int = 0
    materialised: int = 0
    dead_again: int = 0
    history: int = 0  # rows of backfill dead letters appended to the offline history


def replay(settings: Settings, store: FeatureStore, group: str = REPLAY_GROUP) -> ReplayResult:
    """Re-process every dead letter not yet replayed by ``group``."""
    # Here, not at the top: `featurectl dlq list` reads dead letters without Feast or Great Expectations.
    from jobs.pg_backfill import BACKFILL_TOPIC_PREFIX, PostgresBackfill
    from streams.isolate import write_isolating
    from streams.processor import build_pipeline
    from streams.routes import load_routes

    consumer = Consumer(
        {
            **settings.kafka_client(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    pipeline = build_pipeline(settings, store, live=False)
    pipeline.routes = load_routes(store)
    result = ReplayResult()
    try:
        msgs = list(_read_to_end(consumer, settings.dlq_topic))
        letters = with_originals(settings, [DeadLetter.from_json(m.value() or b"{}") for m in msgs])
        groups: dict[tuple[str | None, int], list[DeadLetter]] = defaultdict(list)
        backfilled: dict[str, list[DeadLetter]] = defaultdict(list)
        for letter in letters:
            if letter.topic.startswith(BACKFILL_TOPIC_PREFIX) and letter.feature_view:
                backfilled[letter.feature_view].append(letter)  # a row state, not a change event
            else:
                groups[(letter.feature_view, letter.attempt + 1)].append(letter)
        for view_name, batch in backfilled.items():
            job = PostgresBackfill(
                store, None, view_name, settings.data_dir / "jobs", pipeline.validator, pipeline.dead_letters
            )
            report = job.replay(batch)
            result.history += report.written
            result.dead_again += report.dead_lettered
        for (view, attempt), batch in groups.items():

            def process(
                messages: Sequence[KafkaMessage], v: str | None = view, a: int = attempt
            ) -> BatchStats:
                return pipeline.process(messages, only_view=v, attempt=a)

            # A dead letter that still cannot be written is dead-lettered again; the rest is written.
            stats, applied = write_isolating(
                pipeline, [letter.message() for letter in batch], process, view, attempt
            )
            result.dead_again += stats.dead_letters
            result.materialised += applied
        result.replayed = len(letters)
        if msgs:
            consumer.commit(offsets=next_offsets(msgs), asynchronous=False)
        logger.info(
            "replayed %d dead letters: %d rows online, %d dead-lettered again",
            result.replayed,
            result.materialised,
            result.dead_again,
        )
        return result
    finally:
        consumer.close()
        pipeline.online.close()
