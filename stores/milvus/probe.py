"""Is the online Milvus answering, with the repository's settings? (``featurectl health``)"""

from __future__ import annotations

from typing import Any

from stores.milvus.feast import MilvusOnlineStore


def probe(store: Any) -> str:
    """Where it answered; pymilvus's error when it does not."""
    client = MilvusOnlineStore()._connect(store.config)  # type: ignore[no-untyped-call]
    collections = client.list_collections()
    config = store.config.online_store
    return f"{config.host}:{config.port} ({len(collections)} collections)"
