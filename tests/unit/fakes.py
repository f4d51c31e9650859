"""In-memory stand-ins for unit tests of the pipeline and the loop (integration tests use the real ones)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import FencedError
from embeddings.spec import EmbeddingSpec, text_hash
from stores.sink import DELETE, OnlineSink, Sink, SinkRow, StoredVector


@dataclass
class Msg:
    """Quacks like confluent_kafka.Message."""

    t: str
    p: int
    o: int
    k: bytes | None
    v: bytes | None

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def error(self) -> None:
        return None


def change(
    offset: int,
    op: str,
    cid: int,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    partition: int = 0,
    lsn: int | None = None,
    commit_ms: int | None = None,
) -> Msg:
    """A change committed at ``commit_ms`` (default: one millisecond per offset, so one transaction each)."""
    ms = commit_ms if commit_ms is not None else 1_700_000_000_000 + offset
    value = {
        "op": op,
        "before": before,
        "after": after,
        "ts_ms": 1,
        "source": {
            "schema": "public",
            "table": "customers",
            "ts_ms": ms,
            "ts_us": ms * 1000,
            "lsn": lsn if lsn is not None else 1000 + offset,
        },
    }
    return Msg(
        "shop.public.customers",
        partition,
        offset,
        json.dumps({"id": cid}).encode(),
        json.dumps(value).encode(),
    )


def customer(cid: int, **overrides: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "email": f"{cid}@x",
        "country": "GB",
        "segment": "gold",
        "credit_limit": "10.00",
        "birth_date": None,
        **overrides,
    }


class MemorySink(OnlineSink):
    """Keeps rows in memory; ``fail_flushes`` makes the next N flushes raise (failure injection)."""

    def __init__(self, fail_flushes: int = 0) -> None:
        self.pending: list[SinkRow] = []
        self.written: list[SinkRow] = []
        self.state: dict[tuple[str, str], SinkRow] = {}
        self.barriers: dict[str, tuple[int, int]] = {}
        self.fences: dict[tuple[str, int], int] = {}
        self.superseded: list[SinkRow] = []
        self.held: dict[tuple[str, int], int] = {}
        self.fail_flushes = fail_flushes

    def add(self, rows: Sequence[SinkRow]) -> None:
        self.pending.extend(rows)

    def discard(self) -> None:
        self.pending.clear()

    def forget(self, rows: Sequence[SinkRow]) -> None:
        gone = {id(r) for r in rows}
        self.pending = [r for r in self.pending if id(r) not in gone]

    def flush(self) -> list[SinkRow]:
        if self.fail_flushes:
            self.fail_flushes -= 1
            raise OSError("injected: disk full")
        if any(self.fences.get(part, 0) > epoch for part, epoch in self.held.items()):
            raise FencedError("injected: fenced")
        applied = []
        self.superseded = []
        for r in self.pending:
            ident = (r.view, json.dumps(r.keys, sort_keys=True))
            if (ident in self.state and self.state[ident].order > r.order) or r.order < self.barriers.get(
                r.view, (-1, -1)
            ):
                self.skipped_older += 1
                if ident in self.state and self.state[ident].event_time == r.event_time:
                    self.superseded.append(r)
                continue
            self.state[ident] = r
            applied.append(r)
        self.written.extend(self.pending)
        self.pending = []
        return applied

    def live_keys(self, view: str) -> list[dict[str, Any]]:
        return [r.keys for (v, _), r in self.state.items() if v == view and r.op != DELETE]

    def add_barrier(self, view: str, version: tuple[int, int]) -> None:
        self.barriers[view] = max(version, self.barriers.get(view, version))

    def claim(self, partitions: Sequence[tuple[str, int]], owner: str) -> dict[tuple[str, int], int]:
        for part in partitions:
            self.fences[part] = self.fences.get(part, 0) + 1
        return {part: self.fences[part] for part in partitions}

    def hold(self, epochs: Mapping[tuple[str, int], int]) -> None:
        self.held = dict(epochs)

    def current_features(self, view: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        rows = [self.state.get((view, json.dumps(k, sort_keys=True))) for k in keys]
        return [None if r is None or r.op == DELETE else dict(r.features) for r in rows]

    def stored_vectors(
        self, spec: EmbeddingSpec, keys: Sequence[dict[str, Any]]
    ) -> list[StoredVector | None]:
        out: list[StoredVector | None] = []
        for k in keys:
            r = self.state.get((spec.view, json.dumps(k, sort_keys=True)))
            text = None if r is None else spec.text_of(r.features)
            vector = None if r is None else r.features.get(spec.field)
            if r is None or text is None or vector is None or r.model != spec.fingerprint:
                out.append(None)
            else:
                out.append(StoredVector(text_hash(text), r.version, np.asarray(vector, np.float32).tobytes()))
        return out


class HashEmbedder:
    """A deterministic stand-in model for unit tests of the embedding step: counts what it embeds."""

    def __init__(self, model: str = "hash", dim: int = 8) -> None:
        self.model = model
        self.dim = dim
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> Any:
        self.calls.append(list(texts))
        rows = [np.random.default_rng(int(text_hash(t)[:8], 16)).random(self.dim) for t in texts]
        return np.asarray(rows, dtype=np.float32)


def hash_embedder(model: str) -> HashEmbedder:
    """A backend factory, named in tags as embedding.backend = 'tests.unit.fakes:hash_embedder'."""
    return HashEmbedder(model, dim=int(model.rsplit("-", 1)[-1]) if model[-1].isdigit() else 8)


@dataclass
class MemoryDeadLetters:
    pending: list[tuple[Any, str, list[dict[str, Any]], str | None, int]] = field(default_factory=list)
    flushed: list[tuple[Any, str, list[dict[str, Any]], str | None, int]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # each added letter's reason kind (streams/dlq.py KINDS)
    policies: list[dict[str, str]] = field(default_factory=list)  # each letter's PII policy (streams/pii.py)

    def add(
        self,
        msg: Any,
        reason: str,
        failed: list[dict[str, Any]] | None = None,
        view: str | None = None,
        attempt: int = 1,
        kind: str = "other",
        pii_policy: Any = None,
    ) -> None:
        self.pending.append((msg, reason, failed or [], view, attempt))
        self.kinds.append(kind)
        self.policies.append(dict(pii_policy or {}))

    def discard(self) -> None:
        self.pending.clear()

    def flush(self) -> int:
        self.flushed.extend(self.pending)
        n = len(self.pending)
        self.pending = []
        return n


class NullSink(Sink):
    def add(self, rows: Sequence[SinkRow]) -> None: ...
    def forget(self, rows: Sequence[SinkRow]) -> None: ...
    def discard(self) -> None: ...
    def flush(self) -> list[SinkRow]:
        return []
