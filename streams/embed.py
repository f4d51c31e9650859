"""The embedding step: vector features for a view's valid upserts, one model call per view per batch.

Work only when needed: an upsert whose text hashes to what the online store already holds under
the declared model reuses the stored vector (an update of a price never calls the model), and
identical texts in a batch are embedded once. Runs after validation, so rows bound for the
dead-letter topic cost no model time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from embeddings.models import Embedder, load_embedder
from embeddings.spec import EmbeddingSpec, text_hash
from stores.sink import UPSERT, OnlineSink, SinkRow

logger = logging.getLogger(__name__)


@dataclass
class EmbedStats:
    """Running totals, for logs and tests: how often the model was actually needed."""

    embedded: int = 0  # texts sent to the model
    reused: int = 0  # vectors kept because the text did not change
    duplicates: int = 0  # texts that appeared more than once in a batch


@dataclass
class EmbeddingStep:
    online: OnlineSink
    load: Callable[[EmbeddingSpec], Embedder] = load_embedder
    stats: EmbedStats | None = None

    def __post_init__(self) -> None:
        self.stats = self.stats or EmbedStats()

    def apply(self, spec: EmbeddingSpec, rows: list[SinkRow]) -> list[SinkRow]:
        """``rows`` with ``spec.field`` set on every upsert (None when it has no text); deletes as they are."""
        assert self.stats is not None
        upserts = [i for i, r in enumerate(rows) if r.op == UPSERT]
        if not upserts:
            return rows
        stored = self.online.stored_vectors(spec, [rows[i].keys for i in upserts])
        vectors: dict[int, list[float] | None] = {}
        todo: dict[str, list[int]] = {}  # text -> rows that need its vector
        reused = 0
        for i, held in zip(upserts, stored, strict=True):
            text = spec.text_of(rows[i].features)
            if text is None:
                vectors[i] = None
            elif held is not None and held.text_hash == text_hash(text):
                vectors[i] = np.frombuffer(held.vector, dtype=np.float32).tolist()
                reused += 1
            else:
                todo.setdefault(text, []).append(i)
        self.stats.reused += reused
        if todo:
            started = time.monotonic()
            computed = self.load(spec).embed(list(todo))
            for vector, idxs in zip(computed, todo.values(), strict=True):
                for i in idxs:
                    vectors[i] = vector.tolist()
            waiting = sum(len(v) for v in todo.values())
            self.stats.embedded += len(todo)
            self.stats.duplicates += waiting - len(todo)
            logger.info(
                "%s: embedded %d texts in %.0f ms (%d vectors reused, %d duplicate texts)",
                spec.view,
                len(todo),
                (time.monotonic() - started) * 1000,
                reused,
                waiting - len(todo),
            )
        return [
            replace(r, features={**r.features, spec.field: vectors[i]}, model=spec.fingerprint)
            if i in vectors
            else r
            for i, r in enumerate(rows)
        ]
