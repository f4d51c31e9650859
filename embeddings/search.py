"""Similarity search for model services: embed the query text with the view's model, ask Feast.

In-process use::

    from feast import FeatureStore
    from embeddings.search import search
    hits = search(FeatureStore("feature_repo"), "product_documents", "waterproof hiking boots", k=5)
    # [{"product_id": 7, "distance": 0.31, "name": ..., "description": ...}, ...], nearest first

The query is embedded by the model the view declares (loaded once per process), so query and
stored vectors always come from the same model.
"""

from __future__ import annotations

from typing import Any

from feast import FeatureStore

from core.errors import ConfigError
from embeddings.models import load_embedder
from embeddings.spec import spec_for


def search(
    store: FeatureStore, view_name: str, text: str, k: int = 5, features: list[str] | None = None
) -> list[dict[str, Any]]:
    """The ``k`` entities nearest to ``text``, nearest first: join keys, ``distance`` and features."""
    view = store.get_feature_view(view_name)
    spec = spec_for(view)
    if spec is None:
        raise ConfigError(
            f"feature view {view_name} declares no embedding",
            "search a view with a vector field (featurectl embeddings status lists them)",
        )
    names = features or [f.name for f in view.features if f.name != spec.field]
    query = load_embedder(spec).embed([text])[0].tolist()
    response = store.retrieve_online_documents_v2(
        features=[f"{view_name}:{name}" for name in names], query=query, top_k=k
    ).to_dict()
    columns = [*view.join_keys, "distance", *names]
    rows = [
        {c: response[c][i] for c in columns if c in response}
        for i in range(len(response.get("distance", [])))
    ]
    return sorted(rows, key=lambda r: r["distance"])
