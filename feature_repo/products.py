"""Product features, fed by change events of public.products."""

from datetime import timedelta

from entities import product
from feast import FeatureView, Field, FileSource, PushSource
from feast.types import Array, Bool, Float64, Int64, String

# History of every product change, appended by the stream processor.
product_details_history = FileSource(
    name="product_details_history",
    path="data/offline/product_details",
    timestamp_field="event_timestamp",
    created_timestamp_column="ingested_at",
)

# Push source over that history.
product_details_push = PushSource(name="product_details_push", batch_source=product_details_history)

# What the catalogue says about a product now.
product_details = FeatureView(
    name="product_details",
    entities=[product],
    ttl=timedelta(0),
    schema=[
        Field(name="product_id", dtype=Int64),
        Field(name="name", dtype=String),
        Field(name="description", dtype=String),
        Field(name="category", dtype=String),
        Field(name="price", dtype=Float64),
        Field(name="in_stock", dtype=Bool),
        Field(name="tags", dtype=Array(String)),
    ],
    source=product_details_push,
    online=True,
    tags={"cdc.table": "public.products", "cdc.key": "product_id=id"},
)
