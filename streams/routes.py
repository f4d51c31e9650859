"""Which feature views a captured table feeds, read from the Feast registry (one place: the repo).

A feature view opts in with tags (see feature_repo/customers.py):
    cdc.table = "<schema>.<table>"          the captured table that feeds it
    cdc.key   = "<join_key>=<column>[,...]" each entity join key and the source column it comes from
Features are the table's columns of the same name, except a vector field, which the embedding step
computes from text features (embeddings/spec.py). Routes are rebuilt from the registry on every
refresh, so `feast apply` reaches a running processor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from feast import FeatureStore, FeatureView
from feast.types import FeastType

from embeddings.spec import EmbeddingSpec, spec_for
from featurectl.errors import ConfigError

logger = logging.getLogger(__name__)
TABLE_TAG = "cdc.table"
KEY_TAG = "cdc.key"


@dataclass(frozen=True, slots=True)
class Route:
    """How one table's rows become one feature view's rows."""

    view: str
    table: str
    keys: tuple[tuple[str, str], ...]  # (join key, source column)
    features: tuple[tuple[str, FeastType], ...]  # (feature name = source column, Feast dtype)
    key_types: tuple[tuple[str, FeastType], ...]  # (join key, Feast dtype)
    embedding: EmbeddingSpec | None = None  # the vector feature to compute, if the view declares one

    @property
    def join_keys(self) -> list[str]:
        return [k for k, _ in self.keys]

    @property
    def feature_names(self) -> list[str]:
        return [f for f, _ in self.features]


def route_for(view: FeatureView) -> Route | None:
    """The route a feature view declares, or None if it is not fed by CDC."""
    table = view.tags.get(TABLE_TAG)
    if not table:
        return None
    spec = view.tags.get(KEY_TAG, "")
    try:
        keys = tuple(
            (k.strip(), c.strip()) for k, c in (pair.split("=", 1) for pair in spec.split(",") if pair)
        )
    except ValueError:
        raise ConfigError(
            f"feature view {view.name}: tag {KEY_TAG}={spec!r} is malformed",
            f"write it as {KEY_TAG}='<join_key>=<source column>', e.g. 'customer_id=id'",
        ) from None
    join_keys = set(view.join_keys)
    if not keys or {k for k, _ in keys} != join_keys:
        raise ConfigError(
            f"feature view {view.name}: tag {KEY_TAG}={spec!r} must map every join key {sorted(join_keys)}",
            f"set {KEY_TAG}='" + ",".join(f"{k}=<column>" for k in sorted(join_keys)) + "'",
        )
    entity_types = {c.name: c.dtype for c in view.entity_columns}
    features = tuple((f.name, f.dtype) for f in view.features if not f.vector_index)
    key_types = tuple((k, entity_types[k]) for k, _ in keys)
    return Route(view.name, table, keys, features, key_types, spec_for(view))


def load_routes(store: FeatureStore, refresh: bool = True) -> dict[str, list[Route]]:
    """Routes by table (``schema.table``), from the registry's current feature views."""
    if refresh:
        store.refresh_registry()  # type: ignore[no-untyped-call]
    routes: dict[str, list[Route]] = {}
    for view in store.list_feature_views():
        route = route_for(view)
        if route:
            routes.setdefault(route.table, []).append(route)
    return routes
