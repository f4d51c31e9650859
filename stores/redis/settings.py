"""The Redis online store's settings (``FEATURECTL_REDIS_*``): the local server's port and password. Imports
nothing of ours: core/settings.py adds these fields to the platform's settings."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class RedisStoreSettings(BaseModel):
    redis_port: int = Field(26379, description="Port of the local Redis online store (not 6379).")
    redis_password: SecretStr | None = Field(
        None,
        json_schema_extra={"exported": True},  # feature_store.yaml reads it (export_store_secrets)
        description="Password of the local Redis (requirepass); feature_store.yaml reads ${FEATURECTL_REDIS_PASSWORD}.",
    )


SETTINGS = RedisStoreSettings
