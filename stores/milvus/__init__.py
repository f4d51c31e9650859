"""The Milvus online store: Feast's ``milvus`` store on typed, nullable collections with HNSW indexes.

``layout.py`` the collections and how values sit in them; ``feast.py`` the Feast plugin; ``sink.py`` the
processor's writer (what it guarantees without transactions: its docstring); ``reembed.py`` re-embedding
after a model change; ``errors.py`` and ``probe.py`` its driver's errors told apart and its health probe;
``server.py`` and ``settings.py`` the local server (milvus-lite) and its settings.
"""

from stores.local import LocalService
from stores.registry import OnlineStoreKind

KIND = OnlineStoreKind(
    name="milvus",
    label="Milvus",
    types={"stores.milvus.feast.MilvusOnlineStore": True},
    sink="stores.milvus.sink:MilvusOnlineSink",
    vectors="stores.milvus.reembed:MilvusVectors",
    errors="stores.milvus.errors:transient",
    probe="stores.milvus.probe:probe",
    many_hosts=True,
    parallel_writes=True,
    transactions=False,  # what its sink guarantees without them: stores/milvus/sink.py
    # milvus-lite is the local server (pure Python, no Docker); a Milvus of your own needs only pymilvus.
    packages=("pymilvus>=3.0,<4", "milvus-lite>=3.2,<4"),
    extra="milvus",
    clients=("pymilvus>=3.0,<4",),
    # Milvus holds vectors too and runs the vector tests and ALL_STORES; the scalar tests would add minutes.
    scalar_tests=False,
    local=LocalService(
        name="milvus",
        server="stores.milvus.server:MilvusServer",
        port="milvus_port",
        declared_by="stores.milvus.server:declares_local",
    ),
)
