"""Order features, fed by change events of public.orders."""

from datetime import timedelta

from entities import customer, order
from feast import FeatureView, Field, FileSource, PushSource
from feast.data_format import DeltaFormat
from feast.types import Array, Float64, Int64, String, UnixTimestamp

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

# Each change of an order as the aggregation view sees it (aggregations/rows.py), appended by the processor:
# what training sets compute its values from at every label time.
customer_orders_history = FileSource(
    name="customer_orders_history",
    path="data/offline/customer_orders",
    timestamp_field="event_timestamp",
    created_timestamp_column="ingested_at",
    file_format=DeltaFormat(),
)

# Per customer, over the orders as the shop's database holds them now: exact under updates (an order moved to
# another customer, a changed amount) and deletes, and as time passes (docs/aggregations.md).
customer_orders = FeatureView(
    name="customer_orders",
    entities=[customer],
    ttl=timedelta(0),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="orders_24h", dtype=Int64, tags={"aggregation": "count() over 24h"}),
        Field(name="spent_7d", dtype=Float64, tags={"aggregation": "sum(amount) over 7d"}),
        Field(name="avg_order_7d", dtype=Float64, tags={"aggregation": "avg(amount) over 7d"}),
        Field(name="largest_order_30d", dtype=Float64, tags={"aggregation": "max(amount) over 30d"}),
        Field(name="products_30d", dtype=Int64, tags={"aggregation": "count_distinct(product_id) over 30d"}),
        Field(name="last_statuses", dtype=Array(String), tags={"aggregation": "last(status, 5) over 30d"}),
        Field(
            name="paid_orders_7d", dtype=Int64, tags={"aggregation": "count() over 7d where status = 'paid'"}
        ),
    ],
    source=customer_orders_history,
    online=True,
    tags={
        "aggregation.table": "public.orders",
        "aggregation.key": "customer_id=customer_id",  # the customer join key = orders.customer_id
        "aggregation.time": "ordered_at",  # windows are over when the order was placed
        "aggregation.suite": "order_status",  # an order its suite rejects is left out of every aggregate
    },
)
