"""Rules every online store of ours applies to ``retrieve_online_documents_v2`` (SQLite, Postgres, Milvus).

Only vector queries are answered: of the view's declared model for an embedding view, of the view's
vector field for a plain vector view (embeddings/spec.py); the response is in entity-key order
because Feast 0.67's ``_retrieve_from_online_store_v2`` pairs the rows with entity keys it has
sorted by value: returned in any other order, features land on the wrong entities. Callers sort by
the ``distance`` column for nearest first (embeddings/search.py does).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from feast import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from embeddings.spec import VectorField, spec_for, vector_field

Document = tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]


def query_spec(
    table: FeatureView, embedding: list[float] | None, query_string: str | None, filters: Any
) -> VectorField:
    """The vector the view is searched by, after checking the query is a vector of its dimension."""
    field = vector_field(table)
    if field is None:
        raise ValueError(
            f"feature view {table.name} has no vector to search; similarity search needs a Field with "
            "vector_index=True (and, to embed text in the stream, the embedding.text / embedding.model tags)"
        )
    if embedding is None or query_string is not None or filters is not None:
        raise ValueError(
            f"feature view {table.name}: only vector queries are supported (query=<vector>, no "
            "query_string or filters); embed the query text with the view's model first"
        )
    if field.dim and len(embedding) != field.dim:
        spec = spec_for(table)
        made_by = f"the view's model {spec.model} makes" if spec is not None else "the view declares"
        raise ValueError(
            f"feature view {table.name}: the query vector has {len(embedding)} dimensions, {made_by} "
            f"{field.dim}; {'embed the query with that model' if spec is not None else 'query with that length'}"
        )
    return field


def distances(vectors: np.ndarray, query: list[float], metric: str) -> np.ndarray:
    """Each row's distance to ``query``, as pgvector and sqlite-vec answer it (smaller is nearer): cosine
    distance (1 - cosine similarity; a zero vector is at distance 1), Euclidean, Manhattan, or the negative
    inner product."""
    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(vectors, dtype=np.float64).reshape(-1, q.size)
    if metric == "cosine":
        norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.where(norms > 0, (m @ q) / norms, 0.0)
        return 1.0 - similarity
    out: np.ndarray
    if metric == "l2":
        out = np.linalg.norm(m - q, axis=1)
    elif metric == "l1":
        out = np.abs(m - q).sum(axis=1)
    else:
        out = -(m @ q)
    return out


def floats(value: ValueProto) -> list[float]:
    """A vector feature's values (float or double list); [] for another or an empty value."""
    kind = value.WhichOneof("val")
    if kind in ("float_list_val", "double_list_val"):
        return [float(v) for v in getattr(value, kind).val]
    return []


def in_entity_key_order(results: list[Document]) -> list[Document]:
    """``results`` sorted by entity key values (see the module docstring for why)."""
    return sorted(
        results,
        key=lambda r: tuple(getattr(v, str(v.WhichOneof("val"))) for v in r[1].entity_values),  # type: ignore[union-attr]
    )


class V2DocumentsOnly:
    """Mixed into a vector store's Feast plugin: similarity queries go through
    ``retrieve_online_documents_v2`` only (the v1 call has another contract)."""

    def retrieve_online_documents(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(
            "this online store answers similarity queries through retrieve_online_documents_v2 "
            "(FeatureStore.retrieve_online_documents_v2(features=[...], query=<vector>, top_k=k))"
        )
