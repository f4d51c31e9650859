"""The Arrow schema of the offline history: each view's entity columns, its features, and the columns
the history adds to them (when, what and from where)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from feast import FeatureView
from feast.types import Array, FeastType, PrimitiveFeastType

from core.errors import ConfigError

_ARROW = {
    "INT64": pa.int64(),
    "INT32": pa.int32(),
    "FLOAT64": pa.float64(),
    "FLOAT32": pa.float32(),
    "STRING": pa.string(),
    "BOOL": pa.bool_(),
    "BYTES": pa.binary(),
    "UNIX_TIMESTAMP": pa.timestamp("us", tz="UTC"),
}


def arrow_type(dtype: FeastType) -> pa.DataType:
    if isinstance(dtype, Array):
        return pa.list_(arrow_type(dtype.base_type))
    if isinstance(dtype, PrimitiveFeastType) and dtype.name in _ARROW:
        return _ARROW[dtype.name]
    raise ConfigError(
        f"feature type {dtype} has no Parquet mapping", "use a primitive Feast type or an Array of one"
    )


# The columns the sink adds to each view's features: when, what and from where.
META_COLUMNS: dict[str, pa.DataType] = {
    "event_timestamp": pa.timestamp("us", tz="UTC"),
    "ingested_at": pa.timestamp("us", tz="UTC"),
    "cdc_op": pa.string(),
    "cdc_deleted": pa.bool_(),
    "cdc_version": pa.int64(),
    "cdc_version_minor": pa.int64(),  # with cdc_version: the row's version (stores/ordering.py)
    "cdc_source": pa.string(),
    # Which model computed the row's vector features (history spans model changes).
    "cdc_embedding_model": pa.string(),
}

# Among a view's rows of one entity and instant (event time and ingestion time: changes of one transaction
# written in one flush), the highest version is the entity's state (stores/ordering.py).
VERSION_COLUMNS = ("cdc_version", "cdc_version_minor")


def history_schema(view: FeatureView) -> pa.Schema:
    """The Arrow schema of a view's history files: entity columns, features, META_COLUMNS.

    Readers pass it to ``pyarrow.dataset`` so files written before a column existed read as nulls.
    An aggregation view's history holds its contributions instead (aggregation_columns).
    """
    from aggregations.spec import aggregation_view

    spec = aggregation_view(view)
    if spec is not None:
        keys = {c.name: c.dtype for c in view.entity_columns}
        return pa.schema(
            [pa.field(name, typ) for name, typ in aggregation_columns(spec, arrow_type(keys[spec.join_key]))]
            + [pa.field(name, typ) for name, typ in META_COLUMNS.items()]
        )
    fields = [pa.field(c.name, arrow_type(c.dtype)) for c in view.entity_columns]
    fields += [pa.field(f.name, arrow_type(f.dtype)) for f in view.features]
    fields += [pa.field(name, typ) for name, typ in META_COLUMNS.items()]
    return pa.schema(fields)


def aggregation_columns(spec: Any, key_type: pa.DataType) -> list[tuple[str, pa.DataType]]:
    """An aggregation view's history columns: each change of a source row (its key as JSON text), its
    aggregation key, event time, and the aggregated columns as Debezium sent them, as text (decimals exact:
    aggregations/offline.py types them per function)."""
    from aggregations.rows import ROW

    columns = [
        (ROW, pa.string()),
        (spec.key_column, key_type),
        (spec.time_column, pa.timestamp("us", tz="UTC")),
    ]
    return columns + [(c, pa.string()) for c in spec.columns if c not in (spec.key_column, spec.time_column)]
