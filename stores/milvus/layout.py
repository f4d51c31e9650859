"""The Milvus collections of a feature view and of the processor's bookkeeping, and how values sit in them.

One collection per feature view, named as Feast names it (``<project>_<view>``), keyed as Feast keys it
(``<join keys>_pk``: the serialised entity key in hex), with ``event_ts``/``created_ts`` in µs. What
differs from Feast 0.67's own ``milvus`` store, which stores every scalar as text and a NULL as ``""``
or ``0`` (a NULL read back as an empty string or a zero, a NULL Float64 not read back at all):

- each scalar feature has its own Milvus type (INT32/INT64/FLOAT/DOUBLE/BOOL/VARCHAR; a timestamp as
  INT64 of Feast's own unit) and is **nullable**, so NULL stays NULL; other types (arrays, maps, bytes)
  are Feast's serialised ``ValueProto``, base64 in a VARCHAR, so they read back exactly;
- the vector field has the view's own ``vector_length`` (Feast takes one ``embedding_dim`` for every
  view), and ``_searchable`` says whether the entity has a vector (an entity without text holds zeros,
  since Milvus refuses a batch whose vectors are all null; search skips it);
- ``_text_hash``/``_model``/``_text_version``: what the vector was computed from and the version of the
  change that set that text (the processor reuses the vector for an unchanged text, re-embedding finds the
  stale ones).

Bookkeeping (``featurectl_<project>_versions``, ``_fences``, ``_barriers``, ``_models``): every entity's
stored version, kept after a delete (the tombstone), the partition epochs, the TRUNCATE barriers and each
embedding view's declared model.
Milvus needs a vector field in every collection: those hold a 2-d placeholder.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feast import FeatureView
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from stores.values import value_bytes

# milvus-lite answers no MVCC timestamp; pymilvus's query iterator warns of it on every call and reads
# at the client's time, which is what a strong-consistency read needs here.
logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)

MAX_VARCHAR = 65535
PLACEHOLDER = "_placeholder"
PLACEHOLDER_DIM = 2
SEARCHABLE, TEXT_HASH, MODEL, TEXT_VERSION = "_searchable", "_text_hash", "_model", "_text_version"
BOOKKEEPING = ("versions", "fences", "barriers", "models")

# Scalar types stored natively: Milvus type name, the ValueProto field.
_NATIVE: dict[ValueType, tuple[str, str]] = {
    ValueType.INT32: ("INT32", "int32_val"),
    ValueType.INT64: ("INT64", "int64_val"),
    ValueType.FLOAT: ("FLOAT", "float_val"),
    ValueType.DOUBLE: ("DOUBLE", "double_val"),
    ValueType.BOOL: ("BOOL", "bool_val"),
    ValueType.STRING: ("VARCHAR", "string_val"),
    ValueType.UNIX_TIMESTAMP: ("INT64", "unix_timestamp_val"),
}


def collection_name(project: str, view: FeatureView | str) -> str:
    return f"{project}_{view if isinstance(view, str) else view.name}"


def key_field(view: FeatureView) -> str:
    """Feast's primary key field: the join keys' names joined, then ``_pk``."""
    return "_".join(c.name for c in view.entity_columns) + "_pk"


def bookkeeping(project: str, what: str) -> str:
    return f"featurectl_{project}_{what}"


@dataclass(frozen=True)
class Column:
    """One feature as stored: its Milvus type, and the ValueProto field (None: serialised ValueProto)."""

    name: str
    value_type: ValueType
    milvus_type: str
    proto_field: str | None
    dim: int = 0  # vector fields

    @property
    def is_vector(self) -> bool:
        return self.milvus_type == "FLOAT_VECTOR"


def columns(view: FeatureView, dim: int = 0) -> list[Column]:
    """How each feature of ``view`` is stored; a vector field without ``vector_length`` gets ``dim`` (the
    store's ``embedding_dim``, as in Feast's Milvus store). A join key listed among the features (a stream
    view's schema may) is the entity key, not a column."""
    keys = {c.name for c in view.entity_columns}
    out = []
    for f in view.features:
        if f.name in keys:
            continue
        value_type = f.dtype.to_value_type()
        if f.vector_index:
            out.append(Column(f.name, value_type, "FLOAT_VECTOR", None, f.vector_length or dim))
            continue
        milvus_type, proto_field = _NATIVE.get(value_type, ("VARCHAR", None))
        out.append(Column(f.name, value_type, milvus_type, proto_field))
    return out


def vector_column(view: FeatureView, dim: int = 0) -> Column | None:
    return next((c for c in columns(view, dim) if c.is_vector), None)


def view_schema(view: FeatureView, dim: int = 0) -> Any:
    """The collection schema of ``view`` and its index parameters are built by ``ensure_view``."""
    from pymilvus import CollectionSchema, DataType, FieldSchema

    fields = [
        FieldSchema(key_field(view), DataType.VARCHAR, max_length=MAX_VARCHAR, is_primary=True),
        FieldSchema("event_ts", DataType.INT64),
        FieldSchema("created_ts", DataType.INT64),
    ]
    vector = vector_column(view, dim)
    for c in columns(view, dim):
        if c.is_vector:
            fields.append(FieldSchema(c.name, DataType.FLOAT_VECTOR, dim=c.dim))
        elif c.milvus_type == "VARCHAR":
            fields.append(FieldSchema(c.name, DataType.VARCHAR, max_length=MAX_VARCHAR, nullable=True))
        else:
            fields.append(FieldSchema(c.name, getattr(DataType, c.milvus_type), nullable=True))
    if vector is None:
        fields.append(FieldSchema(PLACEHOLDER, DataType.FLOAT_VECTOR, dim=PLACEHOLDER_DIM))
    else:
        fields += [
            FieldSchema(SEARCHABLE, DataType.BOOL),
            FieldSchema(TEXT_HASH, DataType.VARCHAR, max_length=128, nullable=True),
            FieldSchema(MODEL, DataType.VARCHAR, max_length=1024, nullable=True),
            FieldSchema(TEXT_VERSION, DataType.INT64, nullable=True),
        ]
    return CollectionSchema(fields, description=f"feature view {view.name} (featurectl layout)")


def encode_columns(view_columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's stored feature values (vectors excepted), converted a column at a time by Feast's rules."""
    out: list[dict[str, Any]] = [{} for _ in rows]
    for c in view_columns:
        if c.is_vector:
            continue
        raw = value_bytes([r.get(c.name) for r in rows], c.value_type)
        for record, serialised in zip(out, raw, strict=True):
            record[c.name] = _stored(c, serialised)
    return out


def stored_value(c: Column, value: ValueProto) -> Any:
    """A Feast value as ``c`` stores it (a scalar column; the empty value is NULL)."""
    return _stored(c, value.SerializeToString())


def _stored(c: Column, serialised: bytes) -> Any:
    if not serialised:
        return None  # Feast's empty value: NULL
    if c.proto_field is None:
        return base64.b64encode(serialised).decode()
    proto = ValueProto.FromString(serialised)
    if proto.WhichOneof("val") != c.proto_field:
        return None
    return getattr(proto, c.proto_field)


def decode(c: Column, stored: Any) -> ValueProto:
    """The ValueProto Feast reads for a stored value (NULL: the empty value)."""
    if stored is None:
        return ValueProto()
    if c.proto_field is None:
        value: ValueProto = ValueProto.FromString(base64.b64decode(stored))
        return value
    return ValueProto(**{c.proto_field: stored})


def view_index_params(client: Any, view: FeatureView, index: dict[str, Any]) -> Any:
    """HNSW (``index``: its parameters and metric) on the vector field; a FLAT one on the placeholder."""
    params = client.prepare_index_params()
    vector = vector_column(view, index.get("dim", 0))
    if vector is None:
        params.add_index(field_name=PLACEHOLDER, index_type="FLAT", metric_type="L2")
        return params
    field = next(f for f in view.features if f.name == vector.name)
    params.add_index(
        field_name=vector.name,
        index_type="HNSW",
        metric_type=(field.vector_search_metric or "COSINE").upper(),
        params={"M": index["m"], "efConstruction": index["ef_construction"]},
    )
    return params


def ensure_view(client: Any, project: str, view: FeatureView, index: dict[str, Any]) -> str:
    """Create ``view``'s collection if missing (loaded, indexed); its name."""
    name = collection_name(project, view)
    if not client.has_collection(name):
        client.create_collection(
            name,
            schema=view_schema(view, index.get("dim", 0)),
            index_params=view_index_params(client, view, index),
            consistency_level="Strong",
        )
    return name


def ensure_bookkeeping(client: Any, project: str) -> dict[str, str]:
    """Create the processor's bookkeeping collections if missing; their names by purpose."""
    from pymilvus import CollectionSchema, DataType, FieldSchema

    def scalar(name: str, kind: Any, **kw: Any) -> Any:
        return FieldSchema(name, kind, **kw)

    specs = {
        "versions": [
            scalar("ident", DataType.VARCHAR, max_length=MAX_VARCHAR, is_primary=True),  # view|entity key hex
            scalar("view", DataType.VARCHAR, max_length=1024),
            scalar("version", DataType.INT64),
            scalar("minor", DataType.INT64),
            scalar("event_us", DataType.INT64),
            scalar("deleted", DataType.BOOL),
            scalar("join_keys", DataType.VARCHAR, max_length=MAX_VARCHAR),
        ],
        "fences": [
            scalar("partition", DataType.VARCHAR, max_length=1024, is_primary=True),  # topic|partition
            scalar("epoch", DataType.INT64),
            scalar("owner", DataType.VARCHAR, max_length=1024),
        ],
        "barriers": [
            scalar("view", DataType.VARCHAR, max_length=1024, is_primary=True),
            scalar("version", DataType.INT64),
            scalar("minor", DataType.INT64),
        ],
        "models": [  # each embedding view's declared model, and when its vectors were filled
            scalar("view", DataType.VARCHAR, max_length=1024, is_primary=True),
            scalar("fingerprint", DataType.VARCHAR, max_length=1024),
            scalar("dim", DataType.INT64),
            scalar("declared_at", DataType.VARCHAR, max_length=64),
            scalar("backfilled_at", DataType.VARCHAR, max_length=64),  # "" until filled
        ],
    }
    names = {}
    for what, fields in specs.items():
        name = bookkeeping(project, what)
        names[what] = name
        if client.has_collection(name):
            continue
        fields = [*fields, FieldSchema(PLACEHOLDER, DataType.FLOAT_VECTOR, dim=PLACEHOLDER_DIM)]
        params = client.prepare_index_params()
        params.add_index(field_name=PLACEHOLDER, index_type="FLAT", metric_type="L2")
        client.create_collection(
            name,
            schema=CollectionSchema(fields, description=f"featurectl {what}"),
            index_params=params,
            consistency_level="Strong",
        )
    return names


def quoted(values: Sequence[str]) -> str:
    """A Milvus ``in [...]`` list of strings (the values are hex, names and numbers: no quotes inside)."""
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"
