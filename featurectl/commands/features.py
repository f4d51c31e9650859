"""`featurectl feast-apply`, `embeddings ...` and `search`: declaring features and their vectors."""

from __future__ import annotations

from pathlib import Path

import click

from featurectl.options import (
    CONNECTOR_FILE,
    definition_of,
    settings_of,
)


@click.command("feast-apply")
@CONNECTOR_FILE
@click.option(
    "--no-source-check",
    is_flag=True,
    help="Apply without checking the views' tables in Postgres (publication, partitions, generated columns).",
)
@click.pass_context
def feast_apply_cmd(ctx: click.Context, path: Path | None, no_source_check: bool) -> None:
    """Run `feast apply` in the feature repository, then re-embed views whose model changed.

    A changed `embedding.model` (or backend, or dimension) starts an empty vector table for the
    new model; this fills it from the texts in the online store, with progress, while the
    processor keeps running. Plain `feast apply` leaves that to `featurectl embeddings backfill`.
    """
    from streams.apply import apply

    settings = settings_of(ctx)
    source = None
    if not no_source_check:
        from stack.postgres import Postgres

        source = (Postgres(settings).app_conninfo(), definition_of(path))
    apply(settings, source, click.echo)


@click.group()
def embeddings() -> None:
    """Embedding views: their models, backfills, and similarity search."""


@embeddings.command("status")
@click.pass_context
def embeddings_status(ctx: click.Context) -> None:
    """Each embedding view's declared model, vector count and backfill state."""
    from stores.reembed import model_states
    from stores.repository import open_store

    for st in model_states(open_store(settings_of(ctx))):
        spec = st.spec
        state = (
            "not applied"
            if st.declared != spec.fingerprint
            else (f"backfilled {st.backfilled_at}" if st.backfilled_at else "backfill pending")
        )
        click.echo(
            f"{spec.view}: model {spec.model} ({spec.backend}, dim {spec.dim}, {spec.metric}) "
            f"text={','.join(spec.text_columns)} vectors={st.vectors} {state}"
        )


@embeddings.command("backfill")
@click.argument("views", nargs=-1)
@click.pass_context
def embeddings_backfill(ctx: click.Context, views: tuple[str, ...]) -> None:
    """Re-embed VIEWS (default: every view whose declared model is not backfilled). Idempotent."""
    from streams.apply import reembed_pending

    reembed_pending(settings_of(ctx), views, click.echo)


@click.command("search")
@click.argument("view")
@click.argument("text")
@click.option("-k", "--top-k", default=5, show_default=True, help="How many nearest entities.")
@click.pass_context
def search_cmd(ctx: click.Context, view: str, text: str, top_k: int) -> None:
    """Entities of VIEW whose embedded text is nearest to TEXT (Feast retrieve_online_documents_v2)."""
    from embeddings.search import search
    from stores.repository import open_store

    hits = search(open_store(settings_of(ctx)), view, text, k=top_k)
    if not hits:
        click.echo("no vectors in the online store yet")
    for rank, hit in enumerate(hits, 1):
        fields = ", ".join(f"{k}={v!r}"[:80] for k, v in hit.items() if k != "distance")
        click.echo(f"{rank}. distance={hit['distance']:.3f}  {fields}")


COMMANDS = [feast_apply_cmd, embeddings, search_cmd]
