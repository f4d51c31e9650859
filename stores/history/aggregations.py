"""Training sets of aggregation views: each label's value computed from the view's Delta history of its
source rows (aggregations/offline.py), the value the online store served or would have served at that time.

An aggregation view's history holds every change of its source rows (stores/history/schema.py
``aggregation_columns``), appended by the processor with the online write. Feast's point-in-time join picks
one row per entity; an aggregation is over many rows, so these views do not go through it: the offline
store's ``get_historical_features`` hands them here, and the other views of the same request to Feast's join.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
from feast.feature_view import FeatureView
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df

from aggregations.offline import values_at
from aggregations.rows import ROW, outward
from aggregations.spec import AggregationView, aggregation_view
from core.errors import ConfigError
from stores.history.schema import history_schema


def history_relation(con: Any, view: FeatureView, spec: AggregationView, files: list[str] | None) -> str:
    """A DuckDB view named ``_history`` over the view's history, in aggregations/offline.py's columns."""
    if files:
        con.execute(
            f"CREATE OR REPLACE VIEW _raw AS SELECT * FROM read_parquet({files!r}, union_by_name = true)"
        )
    else:
        con.register("_raw_empty", history_schema(view).empty_table())
        con.execute("CREATE OR REPLACE VIEW _raw AS SELECT * FROM _raw_empty")
    # The aggregated columns stay the text the processor stored: values_at types them per function.
    typed = [f'"{c}"' for c in spec.columns]
    con.execute(
        f"""CREATE OR REPLACE VIEW _history AS SELECT {ROW} AS _row, CAST("{spec.key_column}" AS VARCHAR) AS _key,
        "{spec.time_column}" AS _event_time, event_timestamp AS _committed, cdc_deleted AS _deleted,
        cdc_version AS _version, cdc_version_minor AS _minor{"".join(", " + t for t in typed)} FROM _raw"""
    )
    return "_history"


def add_values(
    frame: pd.DataFrame,
    views: Sequence[FeatureView],
    feature_refs: Sequence[str],
    full_feature_names: bool,
    files_of: Callable[[FeatureView], list[str] | None],
) -> pd.DataFrame:
    """``frame`` (the labels, with any other views' features) with each requested aggregation's value."""
    timestamp = infer_event_timestamp_from_entity_df(dict(zip(frame.columns, frame.dtypes, strict=True)))
    times = pd.to_datetime(frame[timestamp], utc=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # stdout is the caller's: no bar printed on it
    try:
        for view in views:
            spec = aggregation_view(view)
            assert spec is not None
            wanted = {ref.split(":", 1)[1] for ref in feature_refs if ref.split(":", 1)[0] == view.name}
            aggs = [a for a in spec.aggregations if a.name in wanted]
            if spec.join_key not in frame.columns:
                raise ConfigError(
                    f"the entity rows have no column {spec.join_key}, which aggregation view {view.name} is keyed by",
                    f"add a {spec.join_key} column to the entity dataframe",
                )
            labels = [
                (k, t.to_pydatetime().astimezone(UTC))
                for k, t in zip(frame[spec.join_key], times, strict=True)
            ]
            values = values_at(con, history_relation(con, view, spec, files_of(view)), labels, aggs)
            for agg in aggs:
                column = f"{view.name}__{agg.name}" if full_feature_names else agg.name
                frame[column] = [outward(v[agg.name]) for v in values]
    finally:
        con.close()
    return frame


class AggregationJob(RetrievalJob):
    """A retrieval whose aggregation views' values are added to the labels (and to ``base``, the other
    views' Feast join, when the request has any) when it runs."""

    def __init__(
        self,
        entity_df: pd.DataFrame,
        base: RetrievalJob | None,
        views: Sequence[FeatureView],
        feature_refs: Sequence[str],
        full_feature_names: bool,
        files_of: Callable[[FeatureView], list[str] | None],
    ) -> None:
        self._entity_df, self._base, self._views = entity_df, base, views
        self._refs, self._full, self._files_of = feature_refs, full_feature_names, files_of

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        frame = self._base.to_df() if self._base is not None else self._entity_df.copy()
        return add_values(frame, self._views, self._refs, self._full, self._files_of)

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return pa.Table.from_pandas(self._to_df_internal(timeout), preserve_index=False)

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list[Any]:
        return []

    @property
    def metadata(self) -> None:
        return None
