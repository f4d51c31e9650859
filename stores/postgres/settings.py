"""The Postgres online store's settings (``FEATURECTL_ONLINE_PG_*``): the local server's port, database, role
and passwords. Imports nothing of ours: core/settings.py adds these fields to the platform's settings."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class PostgresStoreSettings(BaseModel):
    online_pg_port: int = Field(25433, description="Port of the local online-store Postgres (pgvector).")
    online_pg_database: str = Field("features", description="Database of the Postgres online store.")
    online_pg_user: str = Field(
        "featurestore", description="Role that owns the Postgres online store's tables (not a superuser)."
    )
    online_pg_password: SecretStr | None = Field(
        None,
        json_schema_extra={"exported": True},  # feature_store.yaml reads it (export_store_secrets)
        description="Password of online_pg_user; feature_store.yaml reads it as ${FEATURECTL_ONLINE_PG_PASSWORD}.",
    )
    online_pg_shared_buffers: str = Field(
        "auto",
        pattern=r"^(auto|\d+(kB|MB|GB|TB))$",
        description="shared_buffers of the local online-store Postgres: `auto` is a quarter of the host's memory "
        "(PostgreSQL's own starting point), or a size such as `2GB`. A vector view's HNSW index answers much "
        "faster from the server's buffers than from the OS cache: give it about 2 GB per million 384-d vectors "
        "(docs/performance.md). Read when the server starts.",
    )
    online_pg_admin_password: SecretStr | None = Field(
        None, description="Superuser password of the local online-store Postgres cluster."
    )


SETTINGS = PostgresStoreSettings
