"""Feast's Spark offline store over the Delta history: training sets for histories that outgrow one host.

Feast's ``spark`` store joins point in time in Spark SQL, but reads only ``SparkSource``s, while the feature
repository declares each view's history as a ``FileSource`` in Delta format (what the processor writes and
the DuckDB store reads). This store is Feast's, with one change: a Delta ``FileSource`` is read as the
``SparkSource`` of the same table (same path, timestamp and created-timestamp columns), so one feature
repository serves both stores and the join is Feast's own (the same rules as the DuckDB store: the latest
row at or before each label time, ties by ``ingested_at``; a delete's tombstone row gives nulls).

    offline_store:
      type: stores.history.spark_store.DeltaSparkOfflineStore
      spark_conf:                    # optional: what is not set here gets the defaults below
        spark.master: spark://spark-master:7077   # default local[*]: this host's cores

Defaults added to ``spark_conf``: Delta Lake's SQL extension and catalog, its jars (``spark.jars``, from
``featurectl stack install --spark``; a ``spark.jars``/``spark.jars.packages`` of your own replaces them) and
the session time zone UTC (the history's times are UTC). A cluster reads the history where its executors
can: a shared file system or object store path in the views' sources. Spark returns label times without a
zone (UTC values), as Feast's Spark store does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from feast.data_format import DeltaFormat
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.repo_config import RepoConfig
from feast.table_format import DeltaFormat as DeltaTableFormat
from pydantic import model_validator

from core.errors import ConfigError
from core.settings import load_settings
from stores.history.schema import VERSION_COLUMNS

try:
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
        SparkOfflineStore,
        SparkOfflineStoreConfig,
    )
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
except ImportError as exc:  # pyspark is an extra
    raise ConfigError(
        f"the Spark offline store needs pyspark ({exc})",
        "`featurectl stack install --spark` (pyspark and Delta Lake's jars)",
    ) from None

TYPE = "stores.history.spark_store.DeltaSparkOfflineStore"

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
}


def delta_jars() -> str:
    """Delta Lake's jars as a ``spark.jars`` value; ConfigError naming the fix if they were not fetched."""
    home = load_settings().delta_jars_dir
    jars = sorted(home.glob("*.jar"))
    if not jars:
        raise ConfigError(
            f"Delta Lake's Spark jars are not in {home}",
            "run `featurectl stack install --spark` (Maven fetches them once), or set spark.jars or "
            "spark.jars.packages in the offline store's spark_conf",
        )
    return ",".join(str(j) for j in jars)


class DeltaSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    type: str = TYPE

    @model_validator(mode="after")
    def _delta_defaults(self) -> DeltaSparkOfflineStoreConfig:
        conf = dict(self.spark_conf or {})
        conf.setdefault("spark.master", "local[*]")
        for key, value in DELTA_CONF.items():
            conf.setdefault(key, value)
        if "spark.jars" not in conf and "spark.jars.packages" not in conf:
            conf["spark.jars"] = delta_jars()
        self.spark_conf = conf
        return self


class HistorySparkSource(SparkSource):
    """A Delta history read by Spark, one row per entity and instant (event time, ingestion time).

    Feast's Spark join keeps, per label, the rows at the latest event time and then at the latest created
    time, and joins them back: two rows of one instant (a transaction that changed the row twice, appended
    in one commit) would each give the label a row, so the training set would hold the label twice. Here,
    as in the DuckDB store and ``featurectl compact``, the instant's highest version is the one row.
    """

    def __init__(self, *, join_keys: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.join_keys = join_keys

    def _load_dataframe_from_path(self, spark_session: Any) -> Any:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        df = super()._load_dataframe_from_path(spark_session)  # type: ignore[no-untyped-call]
        instant = [*self.join_keys, self.timestamp_field]
        if self.created_timestamp_column:
            instant.append(self.created_timestamp_column)
        order = [F.col(c).desc() for c in VERSION_COLUMNS if c in df.columns] or [F.lit(0)]
        ranked = df.withColumn(
            "__featurectl_rank", F.row_number().over(Window.partitionBy(*instant).orderBy(*order))
        )
        return ranked.filter("__featurectl_rank = 1").drop("__featurectl_rank")


def as_spark_source(source: DataSource, repo_path: str | None, join_keys: list[str]) -> DataSource:
    """A Delta ``FileSource`` as a ``HistorySparkSource`` of the same table; any other source unchanged."""
    if not isinstance(source, FileSource) or not isinstance(source.file_format, DeltaFormat):
        return source
    path = source.path
    if "://" not in path and not Path(path).is_absolute() and repo_path not in (None, "", "None"):
        path = str(Path(str(repo_path)) / path)  # relative paths are the repository's, as Feast reads them
    return HistorySparkSource(
        join_keys=join_keys,
        name=source.name,
        path=path,
        table_format=DeltaTableFormat(),
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=source.field_mapping,
    )


def _with_spark_source(view: FeatureView, repo_path: str | None) -> FeatureView:
    if view.batch_source is None:
        return view
    keys = [view.projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
    source = as_spark_source(view.batch_source, repo_path, keys)
    if source is view.batch_source:
        return view
    out = copy.copy(view)  # the registry's view stays as declared
    out.batch_source = source
    return out


class DeltaSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark offline store, reading the Delta history ``FileSource``s of the feature repository."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig, feature_views: list[FeatureView], *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        views = [_with_spark_source(v, str(config.repo_path)) for v in feature_views]
        return SparkOfflineStore.get_historical_features(config, views, *args, **kwargs)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig, data_source: DataSource, join_key_columns: list[str], *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        source = as_spark_source(data_source, str(config.repo_path), join_key_columns)
        return SparkOfflineStore.pull_latest_from_table_or_query(
            config, source, join_key_columns, *args, **kwargs
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig, data_source: DataSource, join_key_columns: list[str], *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        source = as_spark_source(data_source, str(config.repo_path), join_key_columns)
        return SparkOfflineStore.pull_all_from_table_or_query(
            config, source, join_key_columns, *args, **kwargs
        )
