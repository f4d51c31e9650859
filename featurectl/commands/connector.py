"""`featurectl connector ...` and `featurectl tail`: the Debezium connector and its topics."""

from __future__ import annotations

import json
from pathlib import Path

import click

from featurectl.options import (
    CONNECTOR_FILE,
    definition_of,
    settings_of,
)


@click.group()
def connector() -> None:
    """Deploy and supervise the Debezium connector through Kafka Connect's REST API."""


@connector.command("deploy")
@CONNECTOR_FILE
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for RUNNING.")
@click.pass_context
def connector_deploy(ctx: click.Context, path: Path | None, timeout: float) -> None:
    """Create or update the connector (idempotent) and wait until it and its tasks are RUNNING."""
    from connectors.deploy import deploy

    definition = definition_of(path)
    deploy(settings_of(ctx), definition, timeout)
    click.echo(f"connector {definition.name} RUNNING")


@connector.command("status")
@CONNECTOR_FILE
@click.pass_context
def connector_status(ctx: click.Context, path: Path | None) -> None:
    """Connector and task states (with the trace of a failed task)."""
    from connectors.client import ConnectClient

    click.echo(
        json.dumps(
            ConnectClient(settings_of(ctx).connect_rest_url).status(definition_of(path).name), indent=2
        )
    )


def _simple(action: str, help_text: str) -> None:
    @connector.command(action, help=help_text)
    @CONNECTOR_FILE
    @click.pass_context
    def command(ctx: click.Context, path: Path | None) -> None:
        from connectors.client import ConnectClient

        name = definition_of(path).name
        getattr(ConnectClient(settings_of(ctx).connect_rest_url), action)(name)
        click.echo(f"connector {name}: {action} requested")


_simple("restart", "Restart the connector's failed tasks.")
_simple("pause", "Pause the connector (the slot keeps WAL until it resumes).")
_simple("resume", "Resume a paused connector.")


@connector.command("delete")
@CONNECTOR_FILE
@click.option(
    "--keep-slot", is_flag=True, help="Keep the replication slot (to resume later without a new snapshot)."
)
@click.pass_context
def connector_delete(ctx: click.Context, path: Path | None, keep_slot: bool) -> None:
    """Delete the connector and drop its replication slot (unless --keep-slot)."""
    from connectors.deploy import remove

    remove(settings_of(ctx), definition_of(path), keep_slot=keep_slot)
    click.echo("connector deleted" + (" (slot kept)" if keep_slot else " and slot dropped"))


@click.command("tail")
@click.argument("tables", nargs=-1)
@CONNECTOR_FILE
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new events.")
@click.pass_context
def tail_cmd(ctx: click.Context, tables: tuple[str, ...], path: Path | None, follow: bool) -> None:
    """Print the change events of TABLES (schema.table; default: every captured table) from the start."""
    from streams.tail import render, tail

    definition = definition_of(path)
    topics = [definition.topic_for(t) for t in (tables or definition.tables)]
    for event in tail(settings_of(ctx).kafka_client(), topics, idle_timeout_s=None if follow else 5.0):
        click.echo(render(event))


COMMANDS = [connector, tail_cmd]
