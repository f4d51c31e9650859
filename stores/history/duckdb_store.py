"""Feast's DuckDB offline store, reading Delta histories without DuckDB's ``delta`` extension.

Feast's ``type: duckdb`` store (ibis over DuckDB) reads a Delta FileSource with ``delta_scan``, which
loads DuckDB's ``delta`` extension, downloaded at run time from extensions.duckdb.org: a host without
that access (this one, most production networks) cannot run a point-in-time join. This store is Feast's,
with one change in how a source is read: the live files of a Delta table come from its log (``deltalake``)
and DuckDB reads them with its built-in Parquet reader (``union_by_name``: files written before a feature
was added read it as null). A Parquet-directory history (the default FileSource format) is read the same
way, as its visible ``*.parquet`` files (stores/history/reader.py). Any other source goes to Feast's own reader.

One change in the join too: rows of one entity at one instant (event time and ingestion time: a transaction
that changed the row twice, appended in one commit) tie in Feast's ordering, and the engine picks one; here the
highest version is the row (``one_row_per_instant``), as ``featurectl compact`` keeps it. The processor and
the backfill append only a transaction's last state (stores/ordering.py ``last_of_each_instant``); this
holds the join to the same rule for a history appended any other way.

    offline_store:
      type: stores.history.duckdb_store.DeltaDuckDBOfflineStore
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import ibis
import pandas as pd
import pyarrow as pa
from feast.data_format import DeltaFormat, ParquetFormat
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.offline_stores.offline_utils import get_timestamp_filter_sql
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from ibis.expr.types import Table

from aggregations.spec import is_aggregation_view
from stores.history.reader import history_files
from stores.history.schema import VERSION_COLUMNS

logger = logging.getLogger(__name__)

TYPE = "stores.history.duckdb_store.DeltaDuckDBOfflineStore"
OLD_TYPE = "offlinestore.duckdb_store.DeltaDuckDBOfflineStore"  # the name before stores/: onlinestore/, offlinestore/ keep it working


class DeltaDuckDBOfflineStoreConfig(feast_duckdb.DuckDBOfflineStoreConfig):
    type: Literal[
        "stores.history.duckdb_store.DeltaDuckDBOfflineStore",
        "offlinestore.duckdb_store.DeltaDuckDBOfflineStore",
    ] = TYPE  # type: ignore[assignment]


# History path (resolved) -> the files to read instead of its live ones (``reading``).
_PINNED: ContextVar[dict[str, list[str]] | None] = ContextVar("featurectl_pinned_files", default=None)


@contextmanager
def reading(files: dict[str, list[str]]) -> Iterator[None]:
    """Within the block, a history whose resolved path is a key of ``files`` is read as exactly those files
    (a pinned training set: stores/history/datasets.py), not its live ones."""
    token = _PINNED.set(files)
    try:
        yield
    finally:
        _PINNED.reset(token)


def _pinned(path: Path) -> list[str] | None:
    files = _PINNED.get()
    return None if files is None else files.get(str(path.resolve()))


def _path(source: FileSource, repo_path: str | None) -> Path:
    path = Path(source.path)
    # Feast passes str(config.repo_path), "None" when the config was built without one.
    return path if path.is_absolute() or repo_path in (None, "", "None") else Path(repo_path) / path


def read_source(data_source: DataSource, repo_path: str) -> Table:
    """An ibis table over ``data_source``: a Delta table's live files, or a Parquet directory's."""
    if not isinstance(data_source, FileSource) or data_source.path.startswith(("s3://", "gs://", "az://")):
        return feast_duckdb._read_data_source(data_source, repo_path)
    path = _path(data_source, repo_path)
    pinned = _pinned(path)
    if pinned:
        return ibis.read_parquet(pinned, union_by_name=True)
    if isinstance(data_source.file_format, DeltaFormat):
        from deltalake import DeltaTable

        table = DeltaTable(str(path))
        files = table.file_uris() if pinned is None else []
        if not files:
            return ibis.memtable(pa.schema(table.schema().to_arrow()).empty_table())
        return ibis.read_parquet(files, union_by_name=True)
    if path.is_dir() and (
        data_source.file_format is None or isinstance(data_source.file_format, ParquetFormat)
    ):
        names = sorted(history_files(path))
        return ibis.read_parquet([str(path / n) for n in names], union_by_name=True)
    return feast_duckdb._read_data_source(data_source, repo_path)


def one_row_per_instant(table: Table, keys: list[str], event_ts: str, created_ts: str | None) -> Table:
    """One row per entity and instant (event time, ingestion time): the highest version.

    Feast's join orders a label's candidate rows by event time, then created time; two rows of one instant
    (a transaction that changed the row twice, appended in one commit) tie, and which one it keeps is up to
    the engine. The last change of the transaction, the highest version, is the row's state.
    """
    order = [ibis.desc(table[c]) for c in VERSION_COLUMNS if c in table.columns]
    if not order:
        return table  # not a featurectl history: nothing to order the instant's rows by
    instant = [*keys, event_ts, *([created_ts] if created_ts else [])]
    rank = ibis.row_number().over(ibis.window(group_by=instant, order_by=order))
    return (
        table.mutate(_featurectl_rank=rank).filter(lambda t: t._featurectl_rank == 0).drop("_featurectl_rank")
    )


def _live_files(data_source: FileSource, repo_path: str | None) -> list[str] | None:
    """The Parquet files ``data_source`` reads now, or None for a source ``read_source`` leaves to Feast."""
    if data_source.path.startswith(("s3://", "gs://", "az://")):
        return None
    path = _path(data_source, repo_path)
    pinned = _pinned(path)
    if pinned is not None:
        return list(pinned)
    if isinstance(data_source.file_format, DeltaFormat):
        from deltalake import DeltaTable

        return list(DeltaTable(str(path)).file_uris())
    if path.is_dir() and (
        data_source.file_format is None or isinstance(data_source.file_format, ParquetFormat)
    ):
        return [str(path / n) for n in sorted(history_files(path))]
    return None


def _files_if_any(data_source: Any, repo_path: str | None) -> list[str]:
    """The live files of a history, none when nothing was appended to it yet."""
    try:
        return _live_files(data_source, repo_path) or []
    except Exception as exc:  # deltalake's TableNotFoundError: no commit yet
        if (
            "no log files" in str(exc).lower()
            or "not a delta table" in str(exc).lower()
            or "TableNotFound" in type(exc).__name__
        ):
            return []
        raise


def _ibis_io(config: RepoConfig, reader: Any) -> dict[str, Any]:
    """How Feast's ibis functions read (``reader``: the history, one row per instant, or a source as it is)
    and where they stage: the same for every query of this store."""
    return {
        "data_source_reader": reader,
        "data_source_writer": feast_duckdb._write_data_source,
        "staging_location": config.offline_store.staging_location,
        "staging_location_endpoint_override": config.offline_store.staging_location_endpoint_override,
    }


def monitoring_from(config: RepoConfig, data_source: DataSource) -> str | None:
    """A DuckDB FROM expression over the rows a view held: its history's live files, tombstones left out.

    Feast's monitoring reads a Delta source with ``delta_scan`` (the extension this store avoids) and
    would count a delete's tombstone (every feature null) as a row with null features. None when the
    source has no files yet.
    """
    assert isinstance(data_source, FileSource)
    files = _live_files(data_source, str(config.repo_path))
    if files is None:
        return feast_duckdb._duckdb_sql_from_expression(config, data_source)
    if not files:
        return None
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return (
        f"(SELECT * FROM read_parquet([{listed}], union_by_name = true) "
        "WHERE NOT coalesce(cdc_deleted, false))"
    )


class DeltaDuckDBOfflineStore(feast_duckdb.DuckDBOfflineStore):
    """Feast's DuckDB offline store with ``read_source`` (module docstring), and Feast's monitoring
    (``feast monitor run``, the UI's Monitoring page) over the same files (``monitoring_from``)."""

    @staticmethod
    def compute_monitoring_metrics(
        config: RepoConfig,
        data_source: DataSource,
        feature_columns: list[tuple[str, str]],
        timestamp_field: str,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        histogram_bins: int = 20,
        top_n: int = 10,
    ) -> list[dict[str, Any]]:
        from_expr = monitoring_from(config, data_source)
        if from_expr is None:
            return []
        ts_filter = get_timestamp_filter_sql(
            start_date, end_date, timestamp_field, tz=UTC, cast_style="timestamp", date_time_separator=" "
        )
        conn = duckdb.connect()
        try:
            columns = dict(
                conn.execute(f"SELECT column_name, column_type FROM (DESCRIBE {from_expr})").fetchall()
            )
            # Feast classifies an Array (an embedding, a list of tags) by its base type, then casts the
            # list to DOUBLE, which fails: vectors get their own drift metric (monitoring/drift.py).
            listed = {n for n, t in columns.items() if t.endswith("[]")}
            for name in sorted(listed & {n for n, _ in feature_columns}):
                logger.info(
                    "monitoring: %s is a list column; Feast's metrics skip it (vectors: featurectl drift)",
                    name,
                )
            numeric = [n for n, t in feature_columns if t == "numeric" and n not in listed]
            results: list[dict[str, Any]] = []
            if numeric:
                results += feast_duckdb._duckdb_numeric_stats(
                    conn, from_expr, numeric, ts_filter, histogram_bins
                )
            for name in (n for n, t in feature_columns if t == "categorical" and n not in listed):
                results.append(
                    feast_duckdb._duckdb_categorical_stats(conn, from_expr, name, ts_filter, top_n)
                )
            return results
        finally:
            conn.close()

    @staticmethod
    def get_monitoring_max_timestamp(
        config: RepoConfig, data_source: DataSource, timestamp_field: str
    ) -> datetime | None:
        from_expr = monitoring_from(config, data_source)
        if from_expr is None:
            return None
        conn = duckdb.connect()
        try:
            row = conn.execute(f'SELECT max("{timestamp_field}") FROM {from_expr} AS _src').fetchone()
        finally:
            conn.close()
        value = None if row is None else row[0]
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return None

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        return pull_latest_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **_ibis_io(config, read_source),
        )

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        aggregated = [v for v in feature_views if is_aggregation_view(v)]
        if aggregated:  # computed from their histories of source rows (stores/history/aggregations.py)
            from stores.history.aggregations import AggregationJob

            if not isinstance(entity_df, pd.DataFrame):
                raise ValueError(
                    f"aggregation views {[v.name for v in aggregated]} need the entity rows as a DataFrame, not SQL"
                )
            names = {v.name for v in aggregated}
            others = [v for v in feature_views if v.name not in names]
            other_refs = [r for r in feature_refs if r.split(":", 1)[0] not in names]
            base = (
                DeltaDuckDBOfflineStore.get_historical_features(
                    config, others, other_refs, entity_df, registry, project, full_feature_names,
                    filter_by_created_timestamp,
                )
                if others
                else None
            )  # fmt: skip
            return AggregationJob(
                entity_df, base, aggregated, feature_refs, full_feature_names,
                lambda v: _files_if_any(v.batch_source, str(config.repo_path)),
            )  # fmt: skip
        keys = {
            v.batch_source.name: [c.name for c in v.entity_columns] for v in feature_views if v.batch_source
        }

        def read_history(data_source: DataSource, repo_path: str) -> Table:
            table = read_source(data_source, repo_path)
            if data_source.name not in keys:
                return table
            return one_row_per_instant(
                table,
                keys[data_source.name],
                data_source.timestamp_field,
                data_source.created_timestamp_column,
            )

        return get_historical_features_ibis(
            config=config,
            feature_views=feature_views,
            feature_refs=feature_refs,
            entity_df=entity_df,
            registry=registry,
            project=project,
            full_feature_names=full_feature_names,
            **_ibis_io(config, read_history),
            filter_by_created_timestamp=filter_by_created_timestamp,
        )

    @staticmethod
    def write_logged_features(
        config: RepoConfig,
        data: pa.Table | Path,
        source: Any,
        logging_config: Any,
        registry: BaseRegistry,
    ) -> None:
        """Append a feature service's served log to its Delta table (stores/history/served.py), where Feast's
        store writes loose Parquet files under the destination path."""
        import pyarrow.parquet as pq

        from stores.history import served

        table = data if isinstance(data, pa.Table) else pq.read_table(data)
        served.append(served.destination_path(logging_config.destination, config.repo_path), table)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        return pull_all_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **_ibis_io(config, read_source),
        )
