"""Writing a batch so that one bad record cannot stop it: in halves, down to the records at fault.

Used by every path that writes change events to the stores: the processor's loop and ``dlq replay``.
A transient failure propagates (the caller backs off and re-reads the batch; nothing was committed).
A terminal one is some record's fault (streams/faults.py): the batch is split in halves, each written
on its own, down to the single records that fail, which go to the dead-letter topic with the reason.
One poison record costs about 2·log2(batch) flushes, and every other record is written, in order.
A source that changed under the stores (SourceChangedError) is nobody's record: it stops the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from core.errors import SourceChangedError
from streams.events import KafkaMessage
from streams.faults import describe, is_transient
from streams.pipeline import BatchStats, Pipeline

logger = logging.getLogger(__name__)


def write_isolating(
    pipeline: Pipeline,
    messages: Sequence[KafkaMessage],
    process: Callable[[Sequence[KafkaMessage]], BatchStats],
    view: str | None = None,
    attempt: int = 1,
) -> tuple[BatchStats, int]:
    """``process`` then flush ``messages``; returns (stats, online rows applied). See the module docstring."""
    try:
        stats = process(messages)
        return stats, pipeline.flush()
    except SourceChangedError:
        pipeline.discard()
        raise
    except Exception as exc:
        pipeline.discard()
        if is_transient(exc):
            raise
        if len(messages) > 1:
            logger.warning(
                "batch of %d messages failed (%s); writing it in halves to isolate the record(s) at fault",
                len(messages),
                describe(exc),
            )
            mid = len(messages) // 2
            first, applied_first = write_isolating(pipeline, messages[:mid], process, view, attempt)
            second, applied_second = write_isolating(pipeline, messages[mid:], process, view, attempt)
            return first.merge(second), applied_first + applied_second
        (msg,) = messages
        logger.error(
            "%s[%s] offset=%s cannot be written: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            describe(exc),
        )
        reason = f"cannot be written to the feature stores: {describe(exc)}"
        pipeline.dead_letters.add(
            msg, reason, view=view, attempt=attempt, kind="write", pii_policy=pipeline.pii_policy_of(msg)
        )
        pipeline.dead_letters.flush()  # TransientError if Kafka is down: the caller retries the batch
        return BatchStats(messages=1, dead_letters=1), 0
