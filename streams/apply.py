"""`featurectl feast-apply`: check what the stream processor needs of every declared view, apply the
repository with Feast, then re-embed the views whose declared model changed."""

from __future__ import annotations

from collections.abc import Callable

from connectors.definition import ConnectorDefinition
from core.errors import ConfigError
from core.settings import Settings
from stores.reembed import pending_views, reembed
from stores.registry import aggregation_view_problems, vector_view_problems
from stores.repository import declared_views, feast_apply, open_store
from streams.routes import check_views, key_columns, routes_for, source_columns, source_keys


def apply_problems(settings: Settings, source: tuple[str, ConnectorDefinition] | None) -> list[str]:
    """Why the processor could not materialise a declared view, one line each: tags and suites, vector
    views on a store without vectors, and with ``source`` (app conninfo, connector) the captured tables."""
    views = declared_views(settings.feature_repo)
    problems = check_views(views, settings.suites_dir)
    problems += vector_view_problems(open_store(settings), views)
    problems += aggregation_view_problems(open_store(settings), views)
    if source is not None:
        from connectors.capture import source_problems

        conninfo, definition = source
        routes = [r for rs in routes_for(views).values() for r in rs if not r.error]
        problems += source_problems(
            conninfo, definition, source_columns(routes), source_keys(routes), key_columns(routes)
        )
    return problems


def apply(
    settings: Settings, source: tuple[str, ConnectorDefinition] | None, echo: Callable[..., None]
) -> None:
    """Refuse (ConfigError listing every problem) or apply, then re-embed what a model change left."""
    problems = apply_problems(settings, source)
    if problems:
        raise ConfigError(
            "not applied: the stream processor could not materialise these views:\n  - "
            + "\n  - ".join(problems),
            "fix each view's tags or suite as its line says, then run `featurectl feast-apply` again",
        )
    feast_apply(settings.feature_repo)
    echo("feature repository applied")
    reembed_pending(settings, (), echo)


def reembed_pending(settings: Settings, views: tuple[str, ...], echo: Callable[..., None]) -> None:
    """Re-embed ``views`` (default: every view whose declared model is not backfilled), with progress."""
    store = open_store(settings)
    todo = views or tuple(pending_views(store))
    if not todo:
        echo("every embedding view is backfilled for its declared model")
    for view in todo:
        shown = [0]

        def progress(done: int, total: int, view: str = view, shown: list[int] = shown) -> None:
            if done == total or done - shown[0] >= max(total // 10, 1):
                echo(f"  {view}: {done}/{total} texts re-embedded", err=True)
                shown[0] = done

        result = reembed(store, view, progress=progress)
        echo(
            f"{view}: {result.vectors} vectors of model {result.model} "
            f"({result.embedded} texts embedded in {result.passes} pass(es), {result.seconds:.1f}s)"
        )
