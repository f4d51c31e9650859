"""Customer features, fed by change events of public.customers."""

from datetime import timedelta

from entities import customer
from feast import FeatureView, Field, FileSource, PushSource
from feast.data_format import DeltaFormat
from feast.types import Float64, Int64, String, UnixTimestamp

# History of every customer change, appended by the stream processor as Parquet files.
customer_profile_history = FileSource(
    name="customer_profile_history",
    path="data/offline/customer_profile",
    timestamp_field="event_timestamp",
    created_timestamp_column="ingested_at",
    file_format=DeltaFormat(),  # a Delta table: atomic appends from many processors (docs/stores.md, the offline history)
)

# Push source over that history: the processor is the pusher, writing both stores itself.
customer_profile_push = PushSource(name="customer_profile_push", batch_source=customer_profile_history)

# Profile of a customer as the shop's database holds it now.
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(0),  # no expiry: a customer's profile is valid until it changes
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="country", dtype=String),
        Field(name="segment", dtype=String),
        Field(name="credit_limit", dtype=Float64),
        Field(name="birth_date", dtype=UnixTimestamp),
        # The e-mail as a keyed hash (pii.email below): equal addresses match, none is readable.
        Field(name="email", dtype=String),
    ],
    source=customer_profile_push,
    online=True,
    tags={
        # The CDC mapping: the captured table that feeds this view, and join key = source column.
        # Features take the table's columns of the same name; the event timestamp is the
        # Postgres commit time of the change.
        "cdc.table": "public.customers",
        "cdc.key": "customer_id=id",
        # Personal data (streams/pii.py), handled before validation, in both stores and in dead letters:
        # the e-mail is stored as HMAC-SHA256 with the secret pii_hash_key; the name, read by no feature,
        # is masked where the raw change is kept (the dead-letter topic).
        "pii.email": "hash",
        "pii.full_name": "mask",
        # Derived from personal data: read only with the role pii-reader (permissions.py).
        "pii": "true",
    },
)
