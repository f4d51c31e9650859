"""Re-embedding on Milvus: the VectorStore that stores/reembed.py's loop drives.

``feast apply`` with another model (stores/milvus/feast.py ``declare``) makes every old vector
unsearchable; this fills the new ones. A vector is written (a partial upsert of the vector fields only)
when the entity's stored version is still the one its text was read at, the check and the write under the
host's lock of the store (stores/milvus/sink.py ``host_lock``), so the processor on this host cannot write in
between. A writer on another host can (the sink's docstring): the vector then carries the older text's
hash, so the loop's next pass finds it stale and embeds the current text; the loop ends only when no live
entity's text differs from its vector's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, FeatureView

from embeddings.spec import EmbeddingSpec, text_hash
from stores.milvus import layout
from stores.milvus.feast import CHUNK
from stores.milvus.layout import MODEL, SEARCHABLE, TEXT_HASH, TEXT_VERSION, quoted
from stores.milvus.lock import host_lock
from stores.milvus.sink import MilvusOnlineSink
from stores.vector_store import ModelState, Stale


class MilvusVectors:
    """The VectorStore of the Milvus online store."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.sink = MilvusOnlineSink(store)
        self.client = self.sink._client
        self.models = layout.bookkeeping(store.project, "models")

    def close(self) -> None:
        self.sink.close()

    def _model(self, view: str) -> dict[str, Any] | None:
        hits = self.client.query(
            self.models, filter=f'view == "{view}"', output_fields=["fingerprint", "backfilled_at"]
        )
        return hits[0] if hits else None

    def pending(self) -> list[str]:
        hits = self.client.query(self.models, filter='backfilled_at == ""', output_fields=["view"])
        return sorted(h["view"] for h in hits)

    def state(self, view: FeatureView, spec: EmbeddingSpec) -> ModelState:
        held = self._model(view.name)
        return ModelState(
            spec,
            held["fingerprint"] if held else None,
            (held["backfilled_at"] or None) if held else None,
            self._count(view, spec),
        )

    def declared(self, view: str) -> str | None:
        held = self._model(view)
        return None if held is None else str(held["fingerprint"])

    def prepare(self, spec: EmbeddingSpec) -> None:
        """Nothing: ``feast apply`` made the view's collection for the model's dimension."""

    def _count(self, view: FeatureView, spec: EmbeddingSpec) -> int:
        name = layout.collection_name(self.store.project, view)
        if not self.client.has_collection(name):
            return 0
        hits = self.client.query(
            name,
            filter=f'{SEARCHABLE} == true and {MODEL} == "{spec.fingerprint}"',
            output_fields=["count(*)"],
        )
        return int(hits[0]["count(*)"]) if hits else 0

    def stale(self, view: FeatureView, spec: EmbeddingSpec) -> list[Stale]:
        name = self.sink._collection(view)
        key_field = layout.key_field(view)
        fields = [key_field, TEXT_HASH, MODEL, *spec.text_columns]
        versions = {key: (version, event_us) for key, version, event_us in self._versions(view.name)}
        out: list[Stale] = []
        iterator = self.client.query_iterator(name, batch_size=1000, filter="", output_fields=fields)
        try:
            while batch := iterator.next():
                for hit in batch:
                    text = spec.text_of({c: hit.get(c) for c in spec.text_columns})
                    held = hit.get(TEXT_HASH) if hit.get(MODEL) == spec.fingerprint else None
                    if text is None or held == text_hash(text) or hit[key_field] not in versions:
                        continue
                    version, event_us = versions[hit[key_field]]
                    out.append(Stale(bytes.fromhex(hit[key_field]), text, version, event_us))
        finally:
            iterator.close()
        return out

    def _versions(self, view: str, keys: Sequence[str] | None = None) -> list[tuple[str, int, int]]:
        """(entity key hex, version, event µs) of the live entities of ``view`` (of ``keys`` when given)."""
        where = f'view == "{view}" and deleted == false'
        if keys is not None:
            where += f" and ident in {quoted([f'{view}|{k}' for k in keys])}"
        out = []
        iterator = self.client.query_iterator(
            self.sink._names["versions"],
            batch_size=1000,
            filter=where,
            output_fields=["ident", "version", "event_us"],
        )
        try:
            while batch := iterator.next():
                out += [(h["ident"].split("|", 1)[1], int(h["version"]), int(h["event_us"])) for h in batch]
        finally:
            iterator.close()
        return out

    def write(self, spec: EmbeddingSpec, rows: Sequence[tuple[Stale, Any]]) -> bool:
        with host_lock(self.store.config):  # the version check and the write, between this host's writers
            return self._write(spec, rows)

    def _write(self, spec: EmbeddingSpec, rows: Sequence[tuple[Stale, Any]]) -> bool:
        if self.declared(spec.view) != spec.fingerprint:
            return False
        view = self.store.get_feature_view(spec.view)
        name, key_field = self.sink._collection(view), layout.key_field(view)
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            now = {k: v for k, v, _ in self._versions(spec.view, [s.key.hex() for s, _ in chunk])}
            records = [
                {
                    key_field: s.key.hex(),
                    spec.field: [float(x) for x in vector],
                    SEARCHABLE: True,
                    TEXT_HASH: text_hash(s.text),
                    MODEL: spec.fingerprint,
                    TEXT_VERSION: s.version,
                }
                for s, vector in chunk
                if now.get(s.key.hex()) == s.version
            ]
            if records:
                self.client.upsert(name, records, partial_update=True)
        return True

    def finish(self, spec: EmbeddingSpec) -> tuple[int, list[str]]:
        held = self._model(spec.view)
        if held is not None and held["fingerprint"] == spec.fingerprint:
            self.client.upsert(
                self.models,
                [{"view": spec.view, "backfilled_at": datetime.now(UTC).isoformat()}],
                partial_update=True,
            )
        return self._count(
            self.store.get_feature_view(spec.view), spec
        ), []  # feast apply dropped the old ones
