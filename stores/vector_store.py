"""What a store that keeps vectors supplies for re-embedding (stores/reembed.py runs the loop), and
what the loop reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from feast import FeatureView

from embeddings.spec import EmbeddingSpec


@dataclass
class BackfillResult:
    view: str
    model: str
    embedded: int
    passes: int
    vectors: int
    seconds: float


@dataclass
class ModelState:
    spec: EmbeddingSpec  # as the registry declares it
    declared: str | None  # the fingerprint the online store was last applied with
    backfilled_at: str | None
    vectors: int


@dataclass(frozen=True, slots=True)
class Stale:
    """A live entity whose vector is missing or not of its current text."""

    key: bytes  # Feast's serialised entity key
    text: str
    version: int  # the entity's stored version when the text was read
    event_us: int = 0


class VectorStore(Protocol):
    """One online store's side of re-embedding; every method is one transaction of its own."""

    def close(self) -> None: ...

    def pending(self) -> list[str]:
        """Views whose declared model has not been backfilled yet."""

    def state(self, view: FeatureView, spec: EmbeddingSpec) -> ModelState:
        """The model the store was last applied with for ``view``, when it was backfilled, its vectors."""

    def declared(self, view: str) -> str | None:
        """The fingerprint of the model declared for ``view`` at the last ``feast apply``."""

    def prepare(self, spec: EmbeddingSpec) -> None:
        """Create what the declared model's vectors need."""

    def stale(self, view: FeatureView, spec: EmbeddingSpec) -> list[Stale]:
        """Live entities whose vector is missing or not of their current text."""

    def write(self, spec: EmbeddingSpec, rows: Sequence[tuple[Stale, Any]]) -> bool:
        """Write the vectors whose entity still has the version its text was read at; False (nothing
        written) when the declared model is no longer ``spec``'s."""

    def finish(self, spec: EmbeddingSpec) -> tuple[int, list[str]]:
        """Mark ``spec`` backfilled and drop other models' vectors: (vectors now held, tables dropped)."""
