"""`featurectl dataset ...`: training sets saved with what they were read from, rebuilt bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from featurectl.options import settings_of

if TYPE_CHECKING:
    import pandas as pd


@click.group("dataset")
def dataset() -> None:
    """Pinned training sets (stores/history/datasets.py): save, rebuild, list, drop."""


def _entities(path: Path) -> pd.DataFrame:
    import pandas as pd

    from core.errors import ConfigError

    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ConfigError(
            f"--entities {path}: not a .parquet or .csv file", "give the entity rows as Parquet or CSV"
        )
    if "event_timestamp" in frame.columns:
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


@dataset.command("save")
@click.argument("name")
@click.option(
    "--entities",
    "entities_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The entity rows (Parquet or CSV): join keys, event_timestamp (each row's label time), labels.",
)
@click.option("--features", default=None, help="Feature references, comma-separated (view:feature,...).")
@click.option("--service", default=None, help="A feature service's features instead of --features.")
@click.option("--full-feature-names", is_flag=True, help="Name columns view__feature.")
@click.option("--replace", is_flag=True, help="Replace a set of that name (its pins are released).")
@click.pass_context
def save_cmd(
    ctx: click.Context,
    name: str,
    entities_path: Path,
    features: str | None,
    service: str | None,
    full_feature_names: bool,
    replace: bool,
) -> None:
    """Build the training set NAME (Feast's point-in-time join) and pin what it was read from.

    Writes data/datasets/NAME/ (the set, its entity rows, the pinned history files, manifest.json with each
    view's history version and the content hash) and registers it as Feast's SavedDataset NAME.
    """
    from stores.history import datasets
    from stores.repository import open_store

    refs = [f.strip() for f in features.split(",") if f.strip()] if features else None
    manifest = datasets.save(
        open_store(settings_of(ctx)),
        name,
        _entities(entities_path),
        refs,
        service,
        full_feature_names,
        replace,
    )
    pinned = sum(len(v["files"]) for v in manifest["views"].values())
    versions = ", ".join(f"{v} v{d['delta_version']}" for v, d in manifest["views"].items())
    click.echo(
        f"dataset {name}: {manifest['rows']} rows x {len(manifest['columns'])} columns, "
        f"sha256 {manifest['content_sha256']}\n  read from {versions}; {pinned} history file(s) pinned"
    )


@dataset.command("rebuild")
@click.argument("name")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the rebuilt set here (Parquet).",
)
@click.pass_context
def rebuild_cmd(ctx: click.Context, name: str, output: Path | None) -> None:
    """Build NAME again from its pinned files and compare: exits 1 unless it is identical (same hash)."""
    from stores.history import datasets
    from stores.repository import open_store

    manifest, built = datasets.rebuild(open_store(settings_of(ctx)), name, output)
    if built.sha256 == manifest["content_sha256"]:
        click.echo(f"dataset {name}: rebuilt identical, {built.table.num_rows} rows, sha256 {built.sha256}")
        return
    click.echo(
        f"dataset {name}: rebuilt DIFFERENT: sha256 {built.sha256} ({built.table.num_rows} rows), saved "
        f"{manifest['content_sha256']} ({manifest['rows']} rows)"
    )
    sys.exit(1)


@dataset.command("list")
@click.pass_context
def list_cmd(ctx: click.Context) -> None:
    """Each saved set: rows, when, what it reads, the space its pins hold."""
    from stores.history import datasets
    from stores.repository import open_store

    store = open_store(settings_of(ctx))
    found = datasets.names(store)
    if not found:
        click.echo("no saved datasets (featurectl dataset save NAME --entities FILE --features ...)")
    for name in found:
        directory, manifest = datasets.load(store, name)
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        click.echo(
            f"{name}: {manifest['rows']} rows, saved {manifest['created_at']}, views "
            f"{', '.join(manifest['views'])}, {size / 1e6:.1f} MB in {directory}"
        )


@dataset.command("drop")
@click.argument("name")
@click.pass_context
def drop_cmd(ctx: click.Context, name: str) -> None:
    """Remove the set NAME and release its pinned history files."""
    from stores.history import datasets
    from stores.repository import open_store

    size = datasets.drop(open_store(settings_of(ctx)), name)
    click.echo(f"dataset {name} dropped ({size / 1e6:.1f} MB released where no history file shares it)")


COMMANDS = [dataset]
