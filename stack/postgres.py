"""The CDC source: a Postgres cluster of the project's own (services/postgres.py) with logical decoding,
the demo schema, its roles and publication.
"""

from __future__ import annotations

import logging

import psycopg

from connectors.definition import ConnectorDefinition
from services.postgres import PostgresCluster

logger = logging.getLogger(__name__)


class Postgres(PostgresCluster):
    """The local CDC source cluster. Constructing it touches nothing; ``start`` does the work."""

    name = "postgres"
    port_setting = "FEATURECTL_PG_PORT"
    admin_secret = "pg_admin_password"

    def _server_settings(self) -> str:
        """postgresql.conf lines of this service's role: here, the CDC source."""
        return (
            "wal_level = logical\n"
            # The backfill stamps a row with the commit time of its state (jobs/pg_backfill.py).
            "track_commit_timestamp = on\n"
            "max_wal_senders = 10\n"
            "max_replication_slots = 10\n"
            # An abandoned replication slot must not fill the disk: cap the WAL it may hold back.
            "max_slot_wal_keep_size = '2GB'\n"
            "shared_buffers = '256MB'\n"
            "log_min_messages = warning\n"
            "log_connections = off\n"
        )

    # --- database contents ---------------------------------------------------------------------
    def _passwords(self) -> dict[str, str]:
        return {
            f: self.settings.require_secret(f)
            for f in ("pg_admin_password", "pg_app_password", "debezium_password")
        }

    def bootstrap(self, connector: ConnectorDefinition) -> None:
        """Roles, database, demo schema, CDC tables and publication for the local stack; safe on every ``up``
        (stack/source_db.py: additive, existing roles keep their passwords)."""
        from stack.source_db import SourceInit

        init = SourceInit(self.settings, self.admin_conninfo, connector, demo_schema=True)
        with init.exclusive():
            init.apply(init.plan())
        logger.info(
            "postgres: database %s ready (roles %s, %s)",
            self.settings.pg_database,
            self.settings.pg_app_user,
            self.settings.debezium_user,
        )

    def app_conninfo(self) -> str:
        s = self.settings
        return psycopg.conninfo.make_conninfo(
            host=s.pg_host,
            port=s.pg_port,
            dbname=s.pg_database,
            user=s.pg_app_user,
            password=s.require_secret("pg_app_password"),
            connect_timeout=5,
        )


def ensure_publication(conn: psycopg.Connection[tuple[object, ...]], connector: ConnectorDefinition) -> None:
    """Create the connector's publication or add the tables it lacks, on ``conn`` (a superuser's, in the
    application database); never removes a table (stack/source_db.py)."""
    from stack.source_db import publication_steps

    for step in publication_steps(conn, connector)[0]:
        conn.execute(step.statement)
