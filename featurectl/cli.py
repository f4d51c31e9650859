"""``featurectl``: the command users type. The root group and its error handling; the commands are in
featurectl/commands/, one module per group."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import click

from core.errors import EXIT_FAILED, EXIT_TRANSIENT, FeatureCtlError
from core.settings import export_store_secrets, load_settings
from featurectl import logs
from featurectl.commands import GROUPS

if TYPE_CHECKING:
    pass

logger = logging.getLogger("featurectl")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Postgres CDC through Debezium and Kafka into a Feast feature store."""
    logs.configure(verbose)
    # What featurectl and the services it starts write (stores, history, Kafka logs, secrets) holds
    # source rows: readable by its owner only, from creation. Directories the postgres OS user must
    # traverse are given their modes explicitly (stack/postgres.py).
    os.umask(0o077)
    ctx.obj = load_settings()
    export_store_secrets(ctx.obj)


for _group in GROUPS:
    for _command in _group.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except FeatureCtlError as exc:
        click.echo(f"error: {exc}", err=True)
        # Schedulers (Airflow, cron wrappers) retry a transient failure and give up on the others.
        sys.exit(EXIT_TRANSIENT if exc.transient else EXIT_FAILED)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
