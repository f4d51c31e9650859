"""``featurectl drift``: have the features moved under the model?"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from featurectl.options import SCHEDULE, run_job, settings_of


@click.command("drift")
@click.argument("views", nargs=-1)
@click.option(
    "--window",
    default=None,
    metavar="DURATION",
    help="The current window, ending now (default: each view's drift.window, else 1d).",
)
@click.option(
    "--until",
    default=None,
    metavar="TIME",
    help="End the current window here (ISO 8601, e.g. 2026-11-24T12:00:00Z) instead of now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write an HTML report with the distributions side by side.",
)
@SCHEDULE
@click.pass_context
def drift_cmd(
    ctx: click.Context,
    views: tuple[str, ...],
    window: str | None,
    until: str | None,
    as_json: bool,
    html_path: Path | None,
    schedule: str | None,
) -> None:
    """Score each feature of VIEWS (default: every view with a history) against its declared reference.

    Prints per view: feature, metric, score, threshold, verdict; exits 1 when any feature drifts (a
    scheduled run logs it instead, and keeps the metrics and `featurectl health` up to date).
    """
    from monitoring.drift.run import run_drift
    from stores.repository import open_store

    settings = settings_of(ctx)
    found: list[str] = []

    def job() -> None:
        end = _parse_time(until) if until else datetime.now(UTC)
        found[:] = run_drift(
            settings, open_store(settings), list(views), window, end, as_json, html_path, click.echo
        )

    run_job(settings, "drift", schedule, job)
    if found:
        sys.exit(1)


def _parse_time(text: str) -> datetime:
    from core.errors import ConfigError

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--until {text!r} is not a time", "write it in ISO 8601, e.g. 2026-11-24T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


COMMANDS = [drift_cmd]
