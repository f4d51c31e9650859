"""Which feature views a captured table feeds, read from the Feast registry (one place: the repo).

A feature view opts in with tags (see feature_repo/customers.py):
    cdc.table = "<schema>.<table>"          the captured table that feeds it
    cdc.key   = "<join_key>=<column>[::<type>][,...]" each entity join key and the source column it comes
                from; a date or time column declares its type (``day=day::date``) so its key is the form
                clients ask with (connectors/pgtypes.py)
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
from feast.types import FeastType, PrimitiveFeastType, String

from aggregations import rows as aggregation_rows
from aggregations.spec import SUITE_TAG, AggregationView, aggregation_view
from connectors.pgtypes import CASTS, KeyColumn
from core.errors import ConfigError
from embeddings.spec import EmbeddingSpec, spec_for
from streams import pii

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
    pii: tuple[tuple[str, str], ...] = ()  # (source column, handling) this view declares (streams/pii.py)
    allow_pii: frozenset[str] = frozenset()  # PII columns its embedding may read (embedding.allow_pii)
    # An aggregation view's route: its rows are contributions keyed by the source row (aggregations/rows.py).
    aggregation: AggregationView | None = None
    key_casts: tuple[tuple[str, str | None], ...] = ()  # (join key, the declared ::type of its column)
    # (feature, declared ::type): an aggregation's key column, decoded to the key clients ask with
    feature_casts: tuple[tuple[str, str], ...] = ()
    key_declaration: str = ""  # the cdc.key tag as written

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
        declared = tuple(
            (k.strip(), c.strip()) for k, c in (pair.split("=", 1) for pair in spec.split(",") if pair)
        )
    except ValueError:
        raise ConfigError(
            f"feature view {view.name}: tag {KEY_TAG}={spec!r} is malformed",
            f"write it as {KEY_TAG}='<join_key>=<source column>', e.g. 'customer_id=id'",
        ) from None
    keys = tuple((k, c.partition("::")[0].strip()) for k, c in declared)
    casts = tuple((k, c.partition("::")[2].strip() or None) for k, c in declared)
    unknown = sorted({cast for _, cast in casts if cast and cast not in CASTS})
    if unknown:
        raise ConfigError(
            f"feature view {view.name}: tag {KEY_TAG}={spec!r} declares type(s) {unknown}, which a key does "
            "not need",
            f"declare only {', '.join(f'::{c}' for c in CASTS)} (date and time columns); other columns need none",
        )
    join_keys = set(view.join_keys)
    if not keys or {k for k, _ in keys} != join_keys:
        raise ConfigError(
            f"feature view {view.name}: tag {KEY_TAG}={spec!r} must map every join key {sorted(join_keys)}",
            f"set {KEY_TAG}='" + ",".join(f"{k}=<column>" for k in sorted(join_keys)) + "'",
        )
    entity_types = {c.name: c.dtype for c in view.entity_columns}
    features = tuple((f.name, f.dtype) for f in view.features if not f.vector_index)
    key_types = tuple((k, entity_types[k]) for k, _ in keys)
    embedding = spec_for(view)
    handling = pii.declared(view.name, view.tags)
    _check_pii(view.name, handling, dict(features), {c for _, c in keys}, embedding)
    return Route(
        view.name,
        table,
        keys,
        features,
        key_types,
        embedding,
        pii=tuple(sorted(handling.items())),
        allow_pii=frozenset(pii.allowed(view.tags)),
        key_casts=casts,
        key_declaration=spec,
    )


def aggregation_route(view: FeatureView) -> Route | None:
    """The route of an aggregation view (aggregations/spec.py), or None if ``view`` declares none.

    Its one join key is the source row (``_row``, from the change's message key, set by the pipeline);
    its features are the key, event-time and aggregated columns of the source table."""
    spec = aggregation_view(view)
    if spec is None:
        return None
    key_dtype = {c.name: c.dtype for c in view.entity_columns}[spec.join_key]
    return Route(
        view.name,
        spec.table,
        ((aggregation_rows.ROW, aggregation_rows.ROW),),
        aggregation_rows.source_features(spec, key_dtype),
        ((aggregation_rows.ROW, String),),
        aggregation=spec,
        feature_casts=((spec.key_column, spec.key_cast),) if spec.key_cast else (),
    )


def _check_pii(
    view: str,
    handling: dict[str, str],
    features: dict[str, FeastType],
    key_columns: set[str],
    embedding: EmbeddingSpec | None,
) -> None:
    for column, how in handling.items():
        if column in key_columns:
            raise ConfigError(
                f"feature view {view}: pii.{column}={how} on a join key column would change the entity's key",
                "key the view by a column that is not personal data, or hash the key upstream",
            )
        dtype = features.get(column)
        if dtype is not None and how in pii.TEXT_HANDLINGS and dtype != String:
            raise ConfigError(
                f"feature view {view}: pii.{column}={how} makes text, but feature {column} is {dtype}",
                f"declare {column} as String, or use pii.{column}=drop",
            )
        if embedding is not None and column in embedding.text_columns:
            raise ConfigError(
                f"feature view {view} embeds {column}, which it declares pii.{column}={how}: it would embed "
                "the handled value",
                f"remove pii.{column} and list {column} in {pii.ALLOW_TAG} to embed the text as it is, "
                "or do not embed it",
            )


def routes_for(views: list[FeatureView]) -> dict[str, list[Route]]:
    """Routes by table (``schema.table``); a view whose tags are broken gets a broken route."""
    routes: dict[str, list[Route]] = {}
    for view in views:
        try:
            route = route_for(view) or aggregation_route(view)
        except ConfigError as exc:
            table = view.tags.get(TABLE_TAG) or view.tags.get("aggregation.table", "")
            route = Route(view.name, table, (), (), (), None, str(exc))
        if route:
            routes.setdefault(route.table, []).append(route)
    return {
        table: _validate_aggregations(_refuse_pii_aggregations(_refuse_pii_embeddings(rs)))
        for table, rs in routes.items()
    }


def _validate_aggregations(routes: list[Route]) -> list[Route]:
    """An aggregation view's source rows must pass the suite of a row view of its table (its
    ``aggregation.suite`` tag): a view without one is broken, so no unvalidated row ever moves a sum."""
    rows = {r.view: r for r in routes if r.aggregation is None and not r.error}
    out = []
    for route in routes:
        spec = route.aggregation
        if spec is not None and spec.suite_view not in rows:
            candidates = sorted(rows) or ["<a view with cdc.table = '" + route.table + "'>"]
            problem = (
                f"names {spec.suite_view!r}, which is not a working row view of {route.table}"
                if spec.suite_view
                else "declares no suite its source rows must pass, so a row every row view rejects would still "
                "move its aggregates"
            )
            error = (
                f"feature view {route.view} {problem}\n  fix: add the tag "
                f'"{SUITE_TAG}": "{candidates[0]}" (the row view of {route.table} whose Great Expectations '
                "suite each source row must pass; a row it rejects is left out of every aggregate)"
            )
            route = Route(route.view, route.table, (), (), (), None, error)
        out.append(route)
    return out


def _refuse_pii_aggregations(routes: list[Route]) -> list[Route]:
    """An aggregation reading a column a view of the table declares PII is broken: it would store and
    serve the raw value (last(email, 5)) or a function of it."""
    declared = table_policy(routes)
    out = []
    for route in routes:
        exposed = sorted(set(route.aggregation.columns) & set(declared)) if route.aggregation else []
        if exposed:
            error = (
                f"feature view {route.view} aggregates {exposed}, declared PII by a view of {route.table}"
                "\n  fix: aggregate other columns (PII handling applies to row features only)"
            )
            route = Route(route.view, route.table, (), (), (), None, error)
        out.append(route)
    return out


def _refuse_pii_embeddings(routes: list[Route]) -> list[Route]:
    """A view embedding a column another view of the table declares PII is broken unless it says so."""
    declared = table_policy(routes)
    out = []
    for route in routes:
        spec = route.embedding
        exposed = (
            sorted(set(spec.text_columns) & set(declared) - route.allow_pii)
            if spec and not route.error
            else []
        )
        if exposed:
            error = (
                f"feature view {route.view} embeds {exposed}, declared PII by a view of {route.table} "
                f"({', '.join(f'pii.{c}={declared[c]}' for c in exposed)})\n  fix: list them in its tag "
                f"{pii.ALLOW_TAG}='{','.join(exposed)}' to embed them as they are, or embed other columns"
            )
            route = Route(route.view, route.table, (), (), (), None, error)
        out.append(route)
    return out


def table_policy(routes: list[Route]) -> dict[str, str]:
    """The PII handling of a table's columns across its views (the strictest where they differ)."""
    return pii.strictest([dict(r.pii) for r in routes if not r.error])


def load_routes(store: FeatureStore, refresh: bool = True) -> dict[str, list[Route]]:
    """Routes by table (``schema.table``), from the registry's current feature views."""
    if refresh:
        store.refresh_registry()  # type: ignore[no-untyped-call]
    return routes_for(store.list_feature_views())


def check_views(views: list[FeatureView], suites_dir: Path) -> list[str]:
    """What is wrong with the CDC views' declarations and suites (empty when all is well).

    The same messages the processor would give, for `featurectl feast-apply` to refuse before applying.
    """
    from validation.drift_spec import drift_spec
    from validation.suites import SuiteStore

    problems: list[str] = []
    for view in views:
        try:
            drift_spec(view)
        except ConfigError as exc:
            problems.append(str(exc))
    suites = SuiteStore(suites_dir)
    for table_routes in routes_for(views).values():
        for route in table_routes:
            if route.error:
                problems.append(route.error)
                continue
            if route.aggregation is not None:
                continue  # no suite: contributions are type-checked (aggregations/rows.py type_problem)
            try:
                suites.get(route.view)
            except ConfigError as exc:
                problems.append(str(exc))
    return problems


def source_columns(routes: list[Route]) -> dict[str, set[str]]:
    """Per captured table, the source columns its views read (keys and features)."""
    out: dict[str, set[str]] = {}
    for route in routes:
        out.setdefault(route.table, set()).update(c for _, c in route.keys if not route.aggregation)
        out[route.table].update(route.feature_names)
    return out


def key_columns(routes: list[Route]) -> list[KeyColumn]:
    """Each join key of the CDC views among ``routes`` with its column, entity type and declared cast, for
    the catalog check of connectors/pgtypes.py."""
    out = []
    for route in routes:
        spec = route.aggregation
        if spec is not None and not route.error:  # its join key is a column of its table too
            dtype = dict(route.features)[spec.key_column]
            kind = dtype.name if isinstance(dtype, PrimitiveFeastType) else str(dtype)
            declared = f"{spec.join_key}={spec.key_column}" + (f"::{spec.key_cast}" if spec.key_cast else "")
            out.append(
                KeyColumn(
                    route.view, route.table, spec.join_key, spec.key_column, kind, spec.key_cast, declared
                )
            )
        if route.aggregation is not None or route.error:
            continue
        casts = dict(route.key_casts)
        types = dict(route.key_types)
        for join_key, column in route.keys:
            dtype = types[join_key]
            kind = dtype.name if isinstance(dtype, PrimitiveFeastType) else str(dtype)
            out.append(
                KeyColumn(
                    route.view,
                    route.table,
                    join_key,
                    column,
                    kind,
                    casts.get(join_key),
                    route.key_declaration,
                )
            )
    return out


def source_keys(routes: list[Route]) -> dict[str, set[str]]:
    """Per captured table, the source columns of its views' join keys."""
    out: dict[str, set[str]] = {}
    for route in routes:
        if route.aggregation is None:  # an aggregation's row key is the table's own primary key
            out.setdefault(route.table, set()).update(c for _, c in route.keys)
    return out
