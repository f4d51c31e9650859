"""Rules every online store of ours applies to ``retrieve_online_documents_v2`` (SQLite, Postgres).

Only vector queries of the view's declared model are answered; the response is in entity-key order
because Feast 0.67's ``_retrieve_from_online_store_v2`` pairs the rows with entity keys it has
sorted by value: returned in any other order, features land on the wrong entities. Callers sort by
the ``distance`` column for nearest first (embeddings/search.py does).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from feast import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from embeddings.spec import EmbeddingSpec, spec_for

Document = tuple[datetime | None, EntityKeyProto | None, dict[str, ValueProto] | None]


def query_spec(
    table: FeatureView, embedding: list[float] | None, query_string: str | None, filters: Any
) -> EmbeddingSpec:
    """The view's embedding, after checking the query is a vector of its model's dimension."""
    spec = spec_for(table)
    if spec is None:
        raise ValueError(
            f"feature view {table.name} declares no embedding; similarity search needs a Field with "
            "vector_index=True and the embedding.text / embedding.model tags"
        )
    if embedding is None or query_string is not None or filters is not None:
        raise ValueError(
            f"feature view {table.name}: only vector queries are supported (query=<vector>, no "
            "query_string or filters); embed the query text with the view's model first"
        )
    if len(embedding) != spec.dim:
        raise ValueError(
            f"feature view {table.name}: the query vector has {len(embedding)} dimensions, the view's "
            f"model {spec.model} makes {spec.dim}; embed the query with that model"
        )
    return spec


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
