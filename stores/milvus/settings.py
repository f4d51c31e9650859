"""The Milvus online store's settings (``FEATURECTL_MILVUS_*``): the local server's port. Imports nothing of
ours: core/settings.py adds these fields to the platform's settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MilvusStoreSettings(BaseModel):
    milvus_port: int = Field(
        29530, description="Port of the local Milvus online store, milvus-lite (not 19530)."
    )


SETTINGS = MilvusStoreSettings
