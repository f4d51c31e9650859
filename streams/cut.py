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

A full batch (a catch-up) is cut too, differently: a transaction's changes sit in several partitions of a
table's topic, which the consumer reads at different paces, so a batch of 5,000 changes held rows of 42-63
transactions where 25 would fit, and the online store held a third to a half of a catch-up's rows out of sight
for a batch. ``carry`` keeps the changes committed at or after the point the slowest partition has reached
for the next batch (each partition's from its first such change on: a suffix, never committed before it is
processed), so the batch ends between transactions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from stores.ordering import version_of
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
            known = self.decoded.get(where(msg))
            if known is not None:  # decoded for an earlier batch that carried it here
                if known.txn is not None:
                    self.seen[known.txn[0]] += 1
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


def carry(batch: Sequence[Message], decoded: dict[Where, ChangeEvent]) -> tuple[list[Message], list[Message]]:
    """``batch`` split into what to process now and what to carry into the next batch (module docstring).

    W is the lowest, over the partitions whose changes the batch holds, of the last commit position read there
    (Debezium's ``sequence[0]``: equal within a transaction, growing from one to the next in commit order). Every
    transaction committed before W has all its changes in those partitions read; one at W may not. Each
    partition's messages from its first change at or after W on are carried, so what is carried is a suffix of
    each partition (its offsets are not committed before it is processed). Nothing is carried when that would
    leave less than half the batch, or none of it (a transaction larger than a batch; a batch of one), so every
    batch makes progress and the next has room for what it reads."""
    top: dict[tuple[str, int], int] = {}
    for msg in batch:
        event = decoded.get(where(msg))
        if event is not None and event.txn is not None:
            at, part = version_of(event)[0], (msg.topic() or "", msg.partition() or 0)
            top[part] = max(at, top.get(part, at))
    if not top:
        return list(batch), []
    w = min(top.values())
    now: list[Message] = []
    later: list[Message] = []
    carrying: set[tuple[str, int]] = set()
    for msg in batch:
        part = (msg.topic() or "", msg.partition() or 0)
        if part not in carrying:
            event = decoded.get(where(msg))
            if event is not None and event.txn is not None and version_of(event)[0] >= w:
                carrying.add(part)
        (later if part in carrying else now).append(msg)
    if not now or 2 * len(now) < len(batch):
        return list(batch), []
    return now, later
