"""The Milvus online store: Feast's ``milvus`` store on typed, nullable collections with HNSW indexes.

``layout.py`` the collections and how values sit in them; ``feast.py`` the Feast plugin; ``sink.py`` the
processor's writer (what it guarantees without transactions: its docstring); ``reembed.py`` re-embedding
after a model change. The local service (milvus-lite) is started by stack/milvus.py.
"""

from stores.registry import OnlineStoreKind

KIND = OnlineStoreKind(
    name="milvus",
    label="Milvus, any number of hosts",
    types={"stores.milvus.feast.MilvusOnlineStore": True},
    sink="stores.milvus.sink:MilvusOnlineSink",
    vectors="stores.milvus.reembed:MilvusVectors",
    hosts="any number of hosts",
    extras=("milvus",),
    errors="stores.milvus.errors:transient",
    probe="stores.milvus.probe:probe",
)
