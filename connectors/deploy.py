"""Deploying and removing a Debezium connector: validate, PUT, wait for RUNNING; delete and drop its slot."""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg

from connectors.client import ConnectClient
from connectors.definition import ConnectorDefinition
from core.errors import ConfigError, FeatureCtlError
from core.procs import wait_for
from core.settings import Settings

logger = logging.getLogger(__name__)


def deploy(settings: Settings, definition: ConnectorDefinition, timeout_s: float = 120.0) -> dict[str, Any]:
    """Create or update the connector and wait until it and all its tasks are RUNNING.

    Idempotent: deploying an unchanged definition leaves the running connector as it is.
    Raises ConfigError naming the field when Connect/Debezium reject the config (a wrong
    password is reported here, before anything is created).
    """
    client = ConnectClient(settings.connect_rest_url)
    config = definition.render(settings)
    errors = client.validate(definition.name, config)
    if errors:
        fix = f"check the Postgres connection settings (FEATURECTL_PG_*, FEATURECTL_DEBEZIUM_*) and {definition.path}"
        if config["database.password"].startswith("${") and any("password" in e for e in errors):
            fix += (
                f"; Connect resolves the password from {config['database.password']} on its workers "
                "(FEATURECTL_CONNECT_DEBEZIUM_PASSWORD): the workers need that config provider and value, "
                "e.g. `featurectl stack down && featurectl stack up` for the local stack (connectors/README.md)"
            )
        raise ConfigError(f"connector {definition.name!r} failed validation:\n  " + "\n  ".join(errors), fix)
    # After Connect's validation, the authority on the connection (its password may differ from this host's).
    config = exclude_unpublished_columns(config, generated_columns(settings, definition))
    created = client.put_config(definition.name, config)
    logger.info(
        "connector %s %s on %s", definition.name, "created" if created else "updated", client.base_url
    )
    return client.wait_state(definition.name, "RUNNING", timeout_s)


def generated_columns(settings: Settings, definition: ConnectorDefinition) -> list[str]:
    """The captured tables' stored generated columns, as ``schema.table.column`` (read as Debezium's role).

    Without the Debezium password on this host (Connect resolves it on its workers), none are found: the
    warning says what that leaves to the user."""
    try:
        conn = psycopg.connect(debezium_conninfo(settings))
    except (ConfigError, psycopg.OperationalError) as exc:
        why = exc.problem if isinstance(exc, ConfigError) else str(exc).strip()
        logger.warning(
            "cannot look for generated columns in the captured tables (%s): a table with one needs it in "
            "column.exclude.list, or its incremental snapshots fail",
            why,
        )
        return []
    with conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname || '.' || a.attname FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE a.attgenerated = 's' AND NOT a.attisdropped AND n.nspname || '.' || c.relname = ANY(%s) "
            "ORDER BY 1",
            (definition.tables,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def exclude_unpublished_columns(config: dict[str, str], columns: list[str]) -> dict[str, str]:
    """``config`` with ``columns`` added to ``column.exclude.list``.

    Postgres 15's logical replication does not publish generated columns, yet Debezium's table schema
    (read over JDBC) has them: its incremental snapshot then fails on the table ("Column ... not found in
    result set"), logs "skipping", and still reports the snapshot completed. Excluded, the table snapshots
    and streams like any other, without them (a view cannot read them: connectors/capture.py).
    """
    if not columns:
        return config
    if "column.include.list" in config:
        raise ConfigError(
            f"the captured tables have generated columns {columns}, which Postgres does not publish, and the "
            "connector sets column.include.list",
            "leave those columns out of column.include.list (Debezium takes an include or an exclude list)",
        )
    given = [c.strip() for c in config.get("column.exclude.list", "").split(",") if c.strip()]
    patterns = given + [re.escape(c) for c in columns if re.escape(c) not in given]
    return {**config, "column.exclude.list": ",".join(patterns)}


def debezium_conninfo(settings: Settings) -> str:
    return psycopg.conninfo.make_conninfo(
        host=settings.pg_host,
        port=settings.pg_port,
        dbname=settings.pg_database,
        user=settings.debezium_user,
        password=settings.require_secret("debezium_password"),
        connect_timeout=5,
    )


def remove(settings: Settings, definition: ConnectorDefinition, keep_slot: bool = False) -> None:
    """Delete the connector; unless ``keep_slot``, drop its replication slot too.

    Deleting a connector does not drop its slot, and an abandoned slot makes Postgres keep WAL
    without limit, so dropping is the default.
    """
    client = ConnectClient(settings.connect_rest_url)
    if client.delete(definition.name):
        logger.info("connector %s deleted", definition.name)
    else:
        logger.info("connector %s was not deployed", definition.name)
    if keep_slot:
        logger.info(
            "keeping replication slot %s (it retains WAL until a connector resumes it)", definition.slot_name
        )
        return
    drop_slot(settings, definition.slot_name)


def drop_slot(settings: Settings, slot: str, timeout_s: float = 60.0) -> bool:
    """Drop ``slot`` once its walsender has let go of it. Returns False if there was no such slot."""
    try:
        with psycopg.connect(debezium_conninfo(settings), autocommit=True) as conn:

            def inactive() -> bool:
                row = conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                return row is None or not row[0]

            wait_for(inactive, timeout_s, f"replication slot {slot} to be released by the deleted connector")
            row = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if row is None:
                return False
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            logger.info("replication slot %s dropped", slot)
            return True
    except psycopg.OperationalError as exc:
        raise FeatureCtlError(
            f"could not connect to Postgres to drop slot {slot}: {exc}",
            "check FEATURECTL_PG_HOST/PORT and the Debezium password; "
            f"or drop it by hand: SELECT pg_drop_replication_slot('{slot}')",
        ) from None
