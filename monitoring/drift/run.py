"""One drift run over a repository's views: score, print, export, remember (``featurectl drift``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from feast import FeatureStore, FeatureView, FileSource

from core.errors import ConfigError
from core.settings import Settings
from monitoring.drift import report
from monitoring.drift.samples import Sample
from validation.drift_spec import drift_spec, parse_duration

logger = logging.getLogger(__name__)


def checked_views(store: FeatureStore, names: list[str]) -> list[FeatureView]:
    """The views named (each must exist and have a file history), or every view with one."""
    views = {v.name: v for v in store.list_feature_views()}
    unknown = [n for n in names if n not in views]
    if unknown:
        raise ConfigError(
            f"no feature view named {', '.join(unknown)}", f"pick from {', '.join(sorted(views))}"
        )
    chosen = [views[n] for n in names] if names else sorted(views.values(), key=lambda v: v.name)
    return [v for v in chosen if isinstance(v.batch_source, FileSource)]


def run_drift(
    settings: Settings,
    store: FeatureStore,
    names: list[str],
    window: str | None,
    end: datetime,
    as_json: bool,
    html_path: Path | None,
    echo: Callable[[str], None],
) -> list[str]:
    """Check each view; returns ``view.feature`` of every drifting feature (empty: no drift)."""
    reports: list[report.ViewDrift] = []
    pictures: list[tuple[report.ViewDrift, Sample, Sample]] = []
    for view in checked_views(store, names):
        spec = drift_spec(view)
        if window is not None:
            spec = replace(spec, window=parse_duration(window, "--window"))
        result, ref, cur = report.check_view(store, view, spec, end)
        pictures.append((result, ref, cur))
        report.export(result)
        reports.append(result)
        if not as_json:
            for line in report.as_table(result):
                echo(line)
        if result.drifting:
            logger.warning("drift in %s: %s (%s)", view.name, ", ".join(result.drifting), result.reference)
    report.save_last(settings.data_dir, reports)
    if as_json:
        echo(report.as_json(reports))
    if html_path is not None:
        from monitoring.drift.html import write_html

        write_html(pictures, html_path)
        echo(f"HTML report: {html_path}")
    return [f"{r.view}.{f}" for r in reports for f in r.drifting]
