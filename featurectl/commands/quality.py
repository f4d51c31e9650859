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


@click.command("consistency")
@click.argument("service", required=False)
@click.option(
    "--window",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Check the lookups logged in this window, ending --until (e.g. 15m, 1d).",
)
@click.option(
    "--until",
    default=None,
    metavar="TIME",
    help="End of the window (ISO 8601); default now minus --settle.",
)
@click.option(
    "--settle",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="Leave out the last lookups, whose changes may still be on their way to the history.",
)
@click.option(
    "--sample",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Check this share of the lookups (whole requests, the same ones every run).",
)
@click.option(
    "--lag",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Freshness lag to explain differences by (default: measured from the history).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a page with the outcomes per feature, over time, and served against recomputed values.",
)
@SCHEDULE
@click.pass_context
def consistency_cmd(
    ctx: click.Context,
    service: str | None,
    window: str,
    until: str | None,
    settle: str,
    sample: float,
    lag: float | None,
    as_json: bool,
    html_path: Path | None,
    schedule: str | None,
) -> None:
    """Recompute what SERVICE served (default: every logged feature service) from the history, as of each request.

    Prints per feature: values compared, matched, missing online, missing offline, different (and the largest
    relative error), how many of those freshness lag explains and how many are real skew. Exits 1 on real skew
    (a scheduled run logs it, and keeps the metrics and `featurectl health` up to date).
    """
    import json

    from monitoring import consistency
    from stores.repository import open_store
    from validation.drift_spec import parse_duration

    settings = settings_of(ctx)
    skewed: list[str] = []

    def job() -> None:
        store = open_store(settings)
        services = (
            [service]
            if service
            else sorted(s.name for s in store.list_feature_services() if s.logging_config is not None)
        )
        if not services:
            from core.errors import ConfigError

            raise ConfigError(
                "no feature service is logged", "give one a logging_config (feature_repo/feature_services.py)"
            )
        end = _parse_time(until) if until else datetime.now(UTC) - parse_duration(settle, "--settle")
        start = end - parse_duration(window, "--window")
        reports = []
        skewed.clear()
        for name in services:
            report = consistency.check(store, name, start, end, sample, lag)
            consistency.export(report)
            consistency.save_last(settings.data_dir, report)
            reports.append(report)
            if report.skew:
                skewed.append(name)
            if not as_json:
                for line in consistency.as_table(report):
                    click.echo(line)
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in reports], indent=1))
        if html_path is not None:
            from monitoring.consistency_html import write_html

            write_html(reports, html_path)
            click.echo(f"HTML report: {html_path}")

    run_job(settings, "consistency", schedule, job)
    if skewed:
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


COMMANDS = [drift_cmd, consistency_cmd]
