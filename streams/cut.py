"""Where a batch ends when the stream is quiet enough to choose: between source transactions, not inside one
(docs/processor.md, "Transactions").

A batch takes what the consumer has fetched. Debezium writes a transaction's changes and its END marker within
a millisecond of each other, but to different topics and partitions, which reach the consumer in separate
fetches; a batch cut between them holds part of a transaction. The online store then holds that part out of
sight, and with it every later transaction (they are released in commit order), until the next batch's online
write: ~100 ms later on Postgres at 1,000 changes/s. Measured there: 0.8% of single-row transactions, which is
the whole tail of the freshness distribution. So the processor tops up a batch that is not full and holds part
of a transaction: it waits a millisecond for what is missing, a few times at most (``Processor._top_up``).

The check reads the batch alone: a transaction whose changes began in an earlier batch (larger than a batch)
looks split however long one waits, which the bound on the rounds covers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Message

from streams.events import ChangeEvent, DecodeError, KafkaMessage, decode, decode_marker

Where = tuple[str, int, int]  # topic, partition, offset


def where(msg: KafkaMessage) -> Where:
    """A message's place, which names it (the key of ``Tally.decoded``)."""
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


@dataclass
class Tally:
    """Per source transaction, what a batch holds of it: changes read and, once its END is read, how many it
    made. Keeps the change events it decoded, for the pipeline to use rather than decode them again."""

    transaction_topic: str
    seen: Counter[str] = field(default_factory=Counter)
    ends: dict[str, int] = field(default_factory=dict)
    decoded: dict[Where, ChangeEvent] = field(default_factory=dict)

    def add(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            if msg.error() is not None:
                continue
            try:
                if msg.topic() == self.transaction_topic:
                    marker = decode_marker(msg)
                    if marker.status == "END" and marker.event_count is not None:
                        self.ends[marker.id] = marker.event_count
                    continue
                event = decode(msg)
            except DecodeError:
                continue  # the pipeline dead-letters it, with the reason
            self.decoded[where(msg)] = event
            if event.txn is not None:
                self.seen[event.txn[0]] += 1

    @property
    def split(self) -> bool:
        """Whether the batch holds part of a transaction: a change whose END it lacks, or an END whose changes
        it does not all hold."""
        return any(t not in self.ends for t in self.seen) or any(
            self.seen[t] < n for t, n in self.ends.items()
        )
