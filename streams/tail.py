"""Reading change events as a consumer sees them (``featurectl tail``; the demo prints with it).

This is a read-only observer: its own consumer group, no offsets committed, so it never
disturbs the processor's group.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from streams.events import ChangeEvent, DecodeError, decode

logger = logging.getLogger(__name__)


def observer(kafka: dict[str, Any], from_beginning: bool = True) -> Consumer:
    """A consumer in a throwaway group that never commits; ``kafka``: Settings.kafka_client()."""
    return Consumer(
        {
            **kafka,
            "group.id": f"featurectl-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.partition.eof": False,
            # A topic subscribed before its first event exists is found within a second, not after
            # librdkafka's default metadata refresh (5 min).
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )


def tail(
    kafka: dict[str, Any],
    topics: list[str],
    from_beginning: bool = True,
    idle_timeout_s: float | None = 5.0,
    timeout_s: float | None = None,
) -> Iterator[ChangeEvent]:
    """Yield decoded change events until ``idle_timeout_s`` passes with none, or ``timeout_s`` in all.

    None for either means no such limit. The consumer is closed when the caller stops iterating.
    """
    consumer = observer(kafka, from_beginning)
    consumer.subscribe(topics)
    last = time.monotonic()
    deadline = None if timeout_s is None else last + timeout_s
    try:
        while deadline is None or time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    return
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # topic appears once the connector writes its first event
                if err.retriable():
                    logger.warning("kafka: %s (retrying)", err)
                    continue
                raise KafkaException(err)
            last = time.monotonic()
            try:
                yield decode(msg)
            except DecodeError as exc:
                logger.warning("skipping %s", exc.problem)
    finally:
        consumer.close()


def render(event: ChangeEvent) -> str:
    """One line per event: where it is, the op, the key, and the before/after images."""
    head = f"{event.where:<34} {event.op:<9} key={json.dumps(event.key, separators=(',', ':'))}"
    if event.is_tombstone:
        return head + "  (tombstone: null value)"
    parts = [head]
    if event.before is not None:
        parts.append(f"  before={json.dumps(event.before, separators=(',', ':'))}")
    if event.after is not None:
        parts.append(f"  after={json.dumps(event.after, separators=(',', ':'))}")
    return "\n".join(parts)
