"""Which feature views a captured table feeds, read from the Feast registry (one place: the repo).

A feature view opts in with tags (see feature_repo/customers.py):
    cdc.table = "<schema>.<table>"          the captured table that feeds it
    cdc.key   = "<join_key>=<column>[,...]" each entity join key and the source column it comes from
Features are the table's columns of the same name, except a vector field, which the embedding step
computes from text features (embeddings/spec.py). Routes are rebuilt from the registry on every
refresh, so `feast apply` reaches a running processor.

A view whose tags are broken gets a *broken* route (``error`` set): its table's rows are dead-lettered
for that view with the reason, while every other view keeps flowing. ``check_views`` gives the same
reasons before `feast apply`, so a broken declaration is refused before it reaches the registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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
    error: str | None = None  # why the view's declaration cannot be materialised (a broken route)

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


def routes_for(views: list[FeatureView]) -> dict[str, list[Route]]:
    """Routes by table (``schema.table``); a view whose tags are broken gets a broken route."""
    routes: dict[str, list[Route]] = {}
    for view in views:
        try:
            route = route_for(view)
        except ConfigError as exc:
            table = view.tags.get(TABLE_TAG, "")
            route = Route(view.name, table, (), (), (), None, str(exc))
        if route:
            routes.setdefault(route.table, []).append(route)
    return routes


def load_routes(store: FeatureStore, refresh: bool = True) -> dict[str, list[Route]]:
    """Routes by table (``schema.table``), from the registry's current feature views."""
    if refresh:
        store.refresh_registry()  # type: ignore[no-untyped-call]
    return routes_for(store.list_feature_views())


def check_views(views: list[FeatureView], suites_dir: Path) -> list[str]:
    """What is wrong with the CDC views' declarations and suites (empty when all is well).

    The same messages the processor would give, for `featurectl feast-apply` to refuse before applying.
    """
    from validation.suites import SuiteStore

    problems: list[str] = []
    suites = SuiteStore(suites_dir)
    for table_routes in routes_for(views).values():
        for route in table_routes:
            if route.error:
                problems.append(route.error)
                continue
            try:
                suites.get(route.view)
            except ConfigError as exc:
                problems.append(str(exc))
    return problems
