"""Re-embedding backfill: fill a view's vectors of its declared model from the texts in the online store.

Run after a model change (``featurectl feast-apply`` runs it for every view whose declared model has
not been backfilled) or by hand (``featurectl embeddings backfill VIEW``). One loop for every store
that keeps vectors; each store supplies a VectorStore (``stores/<name>/reembed.py``).

Safe while processors run: a vector is written only if the entity's stored version is still the one
its text was read at, checked in the transaction that writes it (else the processor has written a
newer text and embedded it itself, and the next pass picks up whatever is left), and passes repeat
until no live entity's text differs from what its vector was computed from. Then the view is marked
backfilled and other models' vectors are dropped. Re-running it does nothing new.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from feast import FeatureStore

from core.errors import ConfigError
from embeddings.models import load_embedder
from embeddings.spec import spec_for
from stores.registry import kind_of
from stores.vector_store import BackfillResult, ModelState, VectorStore

logger = logging.getLogger(__name__)


def vector_store(store: FeatureStore) -> VectorStore | None:
    """The re-embedding side of ``store``'s online store; None when it keeps no vectors."""
    return kind_of(store).vector_store(store)


def model_states(store: FeatureStore) -> list[ModelState]:
    """Each embedding view's declared model in the registry and in the online store, and its vectors."""
    vectors = vector_store(store)
    if vectors is None:
        return []
    try:
        out = []
        for view in store.list_feature_views():
            spec = spec_for(view)
            if spec is not None:
                out.append(vectors.state(view, spec))
        return out
    finally:
        vectors.close()


def pending_views(store: FeatureStore) -> list[str]:
    """Embedding views whose declared model has not been backfilled yet."""
    vectors = vector_store(store)
    if vectors is None:
        return []  # no vectors there (the sink and feast-apply refuse vector views)
    try:
        return vectors.pending()
    finally:
        vectors.close()


def reembed(
    store: FeatureStore,
    view_name: str,
    chunk: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillResult:
    """Embed every live entity of ``view_name`` whose vector is missing or stale under the declared model."""
    started = time.monotonic()
    store.refresh_registry()  # type: ignore[no-untyped-call]
    view = store.get_feature_view(view_name)
    spec = spec_for(view)
    if spec is None:
        raise ConfigError(
            f"feature view {view_name} declares no embedding", "pick a view with a vector field"
        )
    vectors = vector_store(store)
    if vectors is None:
        raise ConfigError(
            f"feature view {view_name}: the online store {store.config.online_store.type} keeps no vectors",
            "keep embedding views on a store that indexes vectors (docs/stores.md)",
        )
    try:
        if vectors.declared(view_name) != spec.fingerprint:
            raise ConfigError(
                f"feature view {view_name}: model {spec.model} is declared in the registry but not in the "
                "online store",
                "run `featurectl feast-apply` (it applies the declarations, then backfills)",
            )
        vectors.prepare(spec)
        embedded = passes = 0
        while True:
            stale = vectors.stale(view, spec)
            if not stale:
                break
            passes += 1
            embedder = load_embedder(spec)  # loaded only when there is something to embed
            logger.info(
                "%s: re-embedding %d texts with %s (pass %d)", view_name, len(stale), spec.model, passes
            )
            for i in range(0, len(stale), chunk):
                part = stale[i : i + chunk]
                computed = embedder.embed([s.text for s in part])
                if not vectors.write(spec, list(zip(part, computed, strict=True))):
                    raise ConfigError(
                        f"feature view {view_name}: its model changed again while backfilling",
                        "run `featurectl feast-apply` again: it backfills the newly declared model",
                    )
                embedded += len(part)
                if progress:
                    progress(min(i + chunk, len(stale)), len(stale))
        count, dropped = vectors.finish(spec)
        if dropped:
            logger.info("%s: dropped vectors of previous models: %s", view_name, ", ".join(dropped))
        return BackfillResult(view_name, spec.model, embedded, passes, count, time.monotonic() - started)
    finally:
        vectors.close()
