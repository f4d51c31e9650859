"""The log of served features: one Delta table per logged feature service, in Feast's log schema.

A ``FeatureService`` with ``logging_config=LoggingConfig(destination=FileLoggingDestination(path=...))`` is logged
to a Delta table at that path (relative to the feature repository), partitioned by ``__log_date``, with Feast's
columns (``feast.feature_logging.FeatureServiceLoggingSource``): the join keys, per feature ``<view>__<feature>``,
``<view>__<feature>__timestamp`` (the served value's event time) and ``<view>__<feature>__status`` (Feast's
``FieldStatus`` number), then ``__log_timestamp`` (the instant the lookup was answered as of: its aggregation
windows end there, its ttl is judged there), ``__log_date`` and ``__request_id``.

Appends are atomic (Delta) and, when given an application id and version (the shipper: one per spool file,
serving/log_shipper.py), at most once: a version at or below the table's mark for that id is not written again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.errors import ConfigError

logger = logging.getLogger(__name__)

LOG_DATE = "__log_date"
LOG_TIMESTAMP = "__log_timestamp"
REQUEST_ID = "__request_id"
TABLE_CONFIG = {"delta.logRetentionDuration": "interval 2 days", "delta.checkpointInterval": "100"}


def log_path(service: Any, repo_path: Path | str | None) -> Path:
    """Where ``service``'s log lives: its FileLoggingDestination's path, relative to the feature repository."""
    return destination_path(getattr(service.logging_config, "destination", None), repo_path, service.name)


def destination_path(destination: Any, repo_path: Path | str | None, name: str = "") -> Path:
    """A FileLoggingDestination's path, relative to the feature repository (ConfigError for any other)."""
    from feast.infra.offline_stores.file_source import FileLoggingDestination

    if not isinstance(destination, FileLoggingDestination) or destination.path.startswith(
        ("s3://", "gs://", "az://")
    ):
        raise ConfigError(
            f"feature service {name} logs to {destination!r}, not a local path",
            "give it logging_config=LoggingConfig(destination=FileLoggingDestination(path='data/logs/<name>'))",
        )
    path = Path(destination.path)
    if path.is_absolute() or repo_path in (None, "", "None"):
        return path
    return Path(str(repo_path)) / path


def append(path: Path, table: pa.Table, app: tuple[str, int] | None = None) -> bool:
    """Append ``table`` (Feast's log schema) to the log at ``path``; with ``app`` = (id, version), only if that
    version is above the table's mark for the id. Returns whether it was written."""
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

    from stores.history.delta import durable

    path.mkdir(parents=True, exist_ok=True)
    current = DeltaTable(str(path)) if (path / "_delta_log").is_dir() else None
    if current is not None and app is not None:
        mark = current.transaction_version(app[0])
        if mark is not None and app[1] <= mark:
            return False
    write_deltalake(
        current if current is not None else str(path),
        table,
        mode="append",
        partition_by=[LOG_DATE],
        schema_mode="merge",  # a feature added to the service adds a column
        configuration=TABLE_CONFIG if current is None else None,
        commit_properties=CommitProperties(app_transactions=[Transaction(*app)] if app else None),
    )
    written = DeltaTable(str(path))
    durable(path, written.version())
    return True


def read(path: Path, start: datetime | None = None, end: datetime | None = None) -> pa.Table:
    """The log's rows with ``start <= __log_timestamp < end`` (either open), days pruned by ``__log_date``."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    if not (path / "_delta_log").is_dir():
        return pa.table({})
    table = DeltaTable(str(path))
    where: list[tuple[str, str, Any]] = []
    if start is not None:
        where.append((LOG_DATE, ">=", start.date().isoformat()))
    if end is not None:
        where.append((LOG_DATE, "<=", end.date().isoformat()))
    files = table.file_uris(file_pruning_predicate=where or None)
    schema = pa.schema(table.schema().to_arrow())
    if not files:
        return schema.empty_table()
    # Files of one day carry __log_date in their path, not their data.
    data = ds.dataset(files, format="parquet", schema=schema.remove(schema.get_field_index(LOG_DATE)))
    rows = data.to_table()
    mask = None
    stamp = rows.column(LOG_TIMESTAMP)
    if start is not None:
        mask = pc.greater_equal(stamp, pa.scalar(start, stamp.type))
    if end is not None:
        below = pc.less(stamp, pa.scalar(end, stamp.type))
        mask = below if mask is None else pc.and_(mask, below)
    return rows if mask is None else rows.filter(mask)
