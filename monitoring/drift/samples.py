"""The two samples a drift check compares, read from a view's offline history.

A sample is the row versions the view held in a time range: every change whose event time (the Postgres
commit time) lies in ``[start, end)``, deletes left out, each change once: the distribution of what
changed in the window, the same rows Feast's monitoring counts (stores/history/duckdb_store.py). A side
larger than ``max_rows`` is sampled uniformly (seeded), so a check's memory stays bounded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore, FeatureView

from core.errors import ConfigError
from stores.history.reader import History
from validation.drift_spec import DriftSpec, Reference

logger = logging.getLogger(__name__)

MAX_ROWS = 200_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Sample:
    rows: pa.Table  # the view's feature columns
    start: datetime | None  # None for a saved dataset
    end: datetime | None
    source: str  # where it came from, for the report

    @property
    def num_rows(self) -> int:
        return int(self.rows.num_rows)


def read_window(
    store: FeatureStore, view: FeatureView, start: datetime, end: datetime, max_rows: int = MAX_ROWS
) -> pa.Table:
    """The view's features over the changes with event time in ``[start, end)``, deletes left out."""
    history = History(store, view)
    names = [f.name for f in view.features]
    files = history.files(where=[("event_timestamp", "<", end), ("event_timestamp", ">=", start)])
    if not files:
        return history.schema.empty_table().select(names)
    t = ds.field("event_timestamp")
    live = ~ds.field("cdc_deleted") | ds.field("cdc_deleted").is_null()
    table = history.dataset(files).to_table(columns=names, filter=(t >= start) & (t < end) & live)
    return _bounded(table, max_rows)


def _bounded(table: pa.Table, max_rows: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    keep = np.sort(np.random.default_rng(0).choice(table.num_rows, size=max_rows, replace=False))
    return table.take(pa.array(keep))


def current(store: FeatureStore, view: FeatureView, end: datetime, window: timedelta) -> Sample:
    start = end - window
    return Sample(read_window(store, view, start, end), start, end, "current window")


def reference(store: FeatureStore, view: FeatureView, spec: DriftSpec, before: datetime) -> Sample:
    """The reference ``spec`` declares, never overlapping the current window (which starts at ``before``)."""
    ref: Reference = spec.reference
    if ref.kind == "window":
        assert ref.span is not None
        start = before - ref.span
        return Sample(read_window(store, view, start, before), start, before, str(ref))
    if ref.kind == "baseline":
        end = min(_baseline_end(store, view), before)
        return Sample(read_window(store, view, EPOCH, end), EPOCH, end, str(ref))
    assert ref.dataset is not None
    return Sample(_saved_dataset(store, view, ref.dataset), None, None, str(ref))


def _baseline_end(store: FeatureStore, view: FeatureView) -> datetime:
    """Just after the last event Feast's baseline for ``view`` counted (its ``max_event_timestamp``)."""
    from feast.monitoring.monitoring_service import MonitoringService

    rows = MonitoringService(store).get_baseline(store.project, feature_view_name=view.name)
    ends = [r["max_event_timestamp"] for r in rows if r.get("max_event_timestamp")]
    if not ends:
        raise ConfigError(
            f"feature view {view.name}: drift.reference=baseline but Feast has no baseline for it",
            f"run `feast monitor run --set-baseline --feature-view {view.name}` in the feature repository",
        )
    latest = max(datetime.fromisoformat(str(e)) for e in ends)
    latest = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
    return latest + timedelta(microseconds=1)


def _saved_dataset(store: FeatureStore, view: FeatureView, name: str) -> pa.Table:
    """The view's features in a saved dataset (columns named ``feature`` or ``view__feature``)."""
    try:
        dataset = store.get_saved_dataset(name)
    except Exception as exc:  # Feast raises its own not-found error class per registry type
        raise ConfigError(
            f"feature view {view.name}: drift.reference=training:{name}: no saved dataset {name!r} ({exc})",
            "create it with store.create_saved_dataset(...) from the training job, or fix the name",
        ) from None
    table = dataset.to_arrow()
    columns: dict[str, pa.ChunkedArray] = {}
    for feature in view.features:
        for candidate in (f"{view.name}__{feature.name}", feature.name):
            if candidate in table.column_names:
                columns[feature.name] = table.column(candidate)
                break
    if not columns:
        raise ConfigError(
            f"feature view {view.name}: saved dataset {name!r} has none of its features",
            "point drift.reference at a dataset built from this view's features",
        )
    return _bounded(pa.table(columns), MAX_ROWS)


def non_null(column: pa.ChunkedArray) -> pa.Array:
    return pc.drop_null(column.combine_chunks())
