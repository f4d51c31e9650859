"""Offsets of a micro-batch: what to commit after it, where to rewind to for a retry."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

logger = logging.getLogger(__name__)


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """Per partition, the offset after the last message of the batch (what a commit names)."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic() or "", m.partition() or 0)
        last[key] = max(last.get(key, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def rewind(consumer: Consumer, messages: Sequence[Message]) -> None:
    """Seek each partition back to the batch's first offset, so the batch is read again."""
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic() or "", m.partition() or 0)
        first[key] = min(first.get(key, m.offset() or 0), m.offset() or 0)
    for (t, p), o in first.items():
        try:
            consumer.seek(TopicPartition(t, p, o))
        except KafkaException as exc:  # no longer assigned: its new owner reads from the last commit
            logger.info("%s[%d]: not rewound (%s)", t, p, exc)
