"""The sink interface and the row it takes.

Contract: ``add`` only buffers; ``flush`` writes everything added since the last flush and returns
only when it is durable, or raises. The processor commits Kafka offsets only after every sink's
``flush`` returned, so a crash at any point means re-delivery, never loss. Sinks are idempotent:
the same row applied twice leaves the same state, and a row older (by version) than what a sink
holds for that entity never overwrites it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embeddings.spec import EmbeddingSpec

UPSERT = "upsert"
DELETE = "delete"
Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, slots=True)
class StoredVector:
    """An entity's stored vector and what it was computed from."""

    text_hash: str
    version: int
    vector: bytes  # float32, little-endian


@dataclass(frozen=True, slots=True)
class SinkRow:
    """One entity's new state in one feature view (an upsert), or its deletion."""

    view: str
    op: str  # UPSERT or DELETE
    keys: dict[str, Any]  # join key -> value
    features: dict[str, Any]  # feature -> value; empty for a delete
    event_time: datetime  # Postgres commit time
    version: int  # per-entity order, first part: commit position (stores/ordering.py)
    cdc_op: str  # c, u, r, d
    source: str  # topic[partition] offset=N, for logs and lineage
    model: str | None = None  # fingerprint of the model that computed the row's vector features
    version_minor: int = 0  # second part: the change's position in its transaction, -1 for a snapshot read
    # (topic, partition, offset) of the change event read from the live stream; None for rows made by a
    # job (backfill, materialize) or a replay, which have no stream position of their own.
    position: tuple[str, int, int] | None = None
    # The id of the source transaction the change belongs to (stores/transactions.py): held out of sight until
    # every change of it has been written; None (a snapshot read, a job's row, a replay): visible at once.
    txn: str | None = None

    @property
    def order(self) -> tuple[int, int]:
        """The full version; a row applies only over a stored one that is not higher."""
        return (self.version, self.version_minor)


class Sink(ABC):
    """A destination for feature rows."""

    @abstractmethod
    def add(self, rows: Sequence[SinkRow]) -> None:
        """Buffer rows; nothing is written yet."""

    @abstractmethod
    def flush(self) -> list[SinkRow]:
        """Write what was added; return the rows that changed state (older ones are skipped)."""

    @abstractmethod
    def discard(self) -> None:
        """Drop buffered rows (after a failed flush, before the batch is re-read)."""

    def forget(self, rows: Sequence[SinkRow]) -> None:
        """Drop these buffered rows (the very objects added) before the flush; others stay."""
        raise NotImplementedError(f"{type(self).__name__} cannot drop single buffered rows")

    def committed(self) -> None:  # noqa: B027 - optional hook: most sinks are idempotent by version
        """The source offsets of everything flushed so far are committed: none of it comes back to
        this writer, so what it remembers to keep a retried batch from being written twice can go."""

    def close(self) -> None:  # noqa: B027 - optional hook: most sinks hold nothing to release
        """Release connections and files."""


class OnlineSink(Sink):
    """An online store sink also knows which entities it currently holds (for a TRUNCATE)."""

    skipped_older: int = 0  # rows not applied because the store held a newer version (cumulative)
    last_skipped: Sequence[SinkRow] = ()  # those of the last flush
    # Of the last flush's skipped rows, those committed at the same instant as the stored change: an
    # earlier change of the same transaction (re-delivered). History must not get them either.
    superseded: list[SinkRow]
    # Whether it stores aggregation views' contributions and its Feast reader computes them (stores/contributions.py).
    aggregates: bool = False

    @property
    def keeps_transactions(self) -> bool:
        """Whether it makes source transactions visible whole (stores/transactions.py)."""
        return False

    @property
    def transactions_waiting(self) -> bool:
        """Whether source transactions read whole wait to be made visible (a flush with no rows must look again)."""
        return False

    def accept_gap(self, position: int) -> None:
        """Retention deleted changes never read (``process --accept-gaps``); ``position``: the transaction topic's
        end now. Transactions from before it may never complete: they are not waited for long."""

    def add_seen(self, txn: str, order: int, version: int) -> None:
        """A change of source transaction ``txn`` at position ``order`` in it (``version``: its commit position)
        was read, whatever became of it (rows, a dead letter, nothing): counted towards the transaction's END."""

    def add_end(self, txn: str, events: int, position: int) -> None:
        """Source transaction ``txn`` made ``events`` changes; its END marker sits at ``position`` (offset) of the
        one-partition transaction topic: commit order."""

    @abstractmethod
    def add_barrier(self, view: str, version: tuple[int, int]) -> None:
        """A TRUNCATE of ``view``'s table at ``version``: from the next flush on, the store refuses every
        row of ``view`` older than it, whichever partition it comes from (flushed with the rows)."""

    @abstractmethod
    def claim(self, partitions: Sequence[Partition], owner: str) -> dict[Partition, int]:
        """Raise each partition's epoch by one for ``owner`` (streams/fencing.py); return the new epochs."""

    @abstractmethod
    def hold(self, epochs: Mapping[Partition, int]) -> None:
        """From now on every flush is refused (FencedError, nothing written) if one of these partitions
        has been claimed with a higher epoch since. Empty (the default): no check (replay, materialize)."""

    @abstractmethod
    def live_keys(self, view: str) -> list[dict[str, Any]]:
        """Join keys of every entity of ``view`` present now."""

    @abstractmethod
    def current_features(self, view: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Each entity's stored feature values (vectors excepted), or None if the store lacks it.

        Reads what ``flush`` has made durable; stands in for unchanged TOASTed columns (streams/toast.py)."""

    def stored_vectors(
        self, spec: EmbeddingSpec, keys: Sequence[dict[str, Any]]
    ) -> list[StoredVector | None]:
        """Each entity's stored vector under ``spec``'s model (None if absent); lets the embedding
        step skip texts that did not change. A sink that keeps no vectors returns all None."""
        return [None] * len(keys)
