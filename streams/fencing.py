"""Fencing: a processor that lost its partitions can no longer write to the online store.

Kafka's group protocol hands a partition to one copy at a time only while every copy keeps up. A copy
that stalls (a batch longer than ``FEATURECTL_MAX_POLL_INTERVAL_MS``, a paused VM, a lost network) is
dropped from the group and its partitions go to another copy, which re-reads them from the last commit,
while the stalled copy may still be holding a batch it is about to write. Per-entity versions
(stores/ordering.py) already keep its older rows out of the online store; fencing keeps the whole batch
out, so a stale copy adds no duplicate history rows offline and no duplicate dead letters either.

The protocol: each (topic, partition) has an epoch in the online store. A copy that is assigned
partitions claims them (epoch + 1, in one write-locked transaction) before writing anything of them;
every flush carries the epochs its batch's partitions were claimed with and, in the same transaction as
its writes, is refused (FencedError) if any stored epoch is higher: someone claimed the partition since.
The refused batch is dropped unwritten and uncommitted; the loop backs off and reads on, and Kafka tells
the stale copy it lost the partitions (or assigns them back, which claims them anew). Writers without
partitions (``dlq replay``, ``materialize``, ``verify --repair``) hold no epochs and are not fenced:
versions order their rows.

The online sink is flushed first, so a refused batch never reaches the offline store or the dead
letters. A stale copy whose flush precedes the new owner's claim is not refused: the new owner re-reads
those changes, and versions make the re-apply a no-op online.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from stores.sink import OnlineSink, Partition
from streams.events import KafkaMessage

logger = logging.getLogger(__name__)


def owner_name(group: str) -> str:
    """How a claim names its processor in the store and in a FencedError."""
    return f"group {group} on {socket.gethostname()} pid {os.getpid()}"


@dataclass
class Claims:
    """One processor's epochs. The rebalance callbacks claim at once; a claim that failed there (the
    store busy) is retried before the next batch, so no batch is written for an unclaimed partition."""

    sink: OnlineSink
    owner: str
    epochs: dict[Partition, int] = field(default_factory=dict)
    unclaimed: set[Partition] = field(default_factory=set)

    def assigned(self, partitions: Collection[Partition]) -> None:
        self.unclaimed.update(partitions)
        try:
            self._claim()
        except Exception as exc:  # a callback must not raise out of consume(); claimed before the next batch
            logger.warning(
                "claiming partitions %s failed (%s); retried before the next batch", sorted(partitions), exc
            )

    def revoked(self, partitions: Collection[Partition]) -> None:
        for part in partitions:
            self.epochs.pop(part, None)
            self.unclaimed.discard(part)

    def for_batch(self, messages: Sequence[KafkaMessage]) -> dict[Partition, int]:
        """The epochs the batch's partitions are held with (claiming any not yet claimed)."""
        parts = {(m.topic() or "", m.partition() or 0) for m in messages}
        self.unclaimed.update(parts - self.epochs.keys())
        self._claim()
        return {part: self.epochs[part] for part in parts}

    def _claim(self) -> None:
        if not self.unclaimed:
            return
        claimed = self.sink.claim(sorted(self.unclaimed), self.owner)
        self.epochs.update(claimed)
        self.unclaimed.clear()
        logger.info("claimed %s", ", ".join(f"{t}[{p}] epoch {e}" for (t, p), e in sorted(claimed.items())))
