"""Offsets: what to commit after a micro-batch, where to rewind to for a retry, where to start."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

logger = logging.getLogger(__name__)

# Answers of a partition that is being created or is changing leader; librdkafka does not mark the
# exception of a watermark query retriable, so the codes are named.
_NOT_READY = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}


def watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """The (low, high) offsets the broker holds for ``tp`` now, not the consumer's cached ones.

    Retriable broker answers are retried until ``timeout_s``: a topic created a moment ago (the dead-letter
    topic appears with its first letter) briefly has no leader and answers NOT_LEADER_FOR_PARTITION.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                tp, timeout=max(1.0, deadline - time.monotonic()), cached=False
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _NOT_READY or time.monotonic() >= deadline:
                raise
            logger.debug("%s[%d]: watermarks not ready (%s); retrying", tp.topic, tp.partition, error)
            time.sleep(0.2)


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


@dataclass(frozen=True)
class Gap:
    """Changes of a partition deleted by retention before this group read them."""

    topic: str
    partition: int
    committed: int | None  # the group's committed offset; None if it has none (new or expired group)
    earliest: int  # the first offset the partition still holds

    def __str__(self) -> str:
        since = (
            f"offset {self.committed}"
            if self.committed is not None
            else "the start (the group has no offsets)"
        )
        return f"{self.topic}[{self.partition}]: changes from {since} to {self.earliest - 1} are gone"


def start_offsets(
    committed: Sequence[TopicPartition], earliest: Sequence[int]
) -> tuple[list[TopicPartition], list[Gap]]:
    """Where each newly assigned partition starts, and the retention gaps found.

    A committed offset still held starts there; a group without one starts at the beginning if the
    partition still holds its first change. Otherwise changes were deleted unread: a Gap (the caller
    refuses to go on silently); its partition starts at the earliest offset it holds.
    """
    starts: list[TopicPartition] = []
    gaps: list[Gap] = []
    for tp, low in zip(committed, earliest, strict=True):
        has_commit = tp.offset >= 0
        if (has_commit and tp.offset < low) or (not has_commit and low > 0):
            gaps.append(Gap(tp.topic, tp.partition, tp.offset if has_commit else None, low))
            starts.append(TopicPartition(tp.topic, tp.partition, low))
        else:
            starts.append(
                TopicPartition(tp.topic, tp.partition, tp.offset if has_commit else OFFSET_BEGINNING)
            )
    return starts, gaps
