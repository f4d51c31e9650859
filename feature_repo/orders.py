"""Order features, fed by change events of public.orders."""

from datetime import timedelta

from entities import order
from feast import FeatureView, Field, FileSource, PushSource
from feast.data_format import DeltaFormat
from feast.types import Float64, Int64, String, UnixTimestamp

# History of every order change, appended by the stream processor.
order_status_history = FileSource(
    name="order_status_history",
    path="data/offline/order_status",
    timestamp_field="event_timestamp",
    created_timestamp_column="ingested_at",
    file_format=DeltaFormat(),  # a Delta table: atomic appends from many processors (docs/stores.md, the offline history)
)

# Push source over that history.
order_status_push = PushSource(name="order_status_push", batch_source=order_status_history)

# Where an order stands now.
order_status = FeatureView(
    name="order_status",
    entities=[order],
    ttl=timedelta(0),
    schema=[
        Field(name="order_id", dtype=Int64),
        Field(name="customer_id", dtype=Int64),
        Field(name="product_id", dtype=Int64),
        Field(name="quantity", dtype=Int64),
        Field(name="amount", dtype=Float64),
        Field(name="status", dtype=String),
        Field(name="ordered_at", dtype=UnixTimestamp),
    ],
    source=order_status_push,
    online=True,
    tags={"cdc.table": "public.orders", "cdc.key": "order_id=id"},
)
