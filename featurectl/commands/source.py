"""`featurectl db init`: the source database's roles, publication and capture settings."""

from __future__ import annotations

from pathlib import Path

import click

from featurectl.options import (
    CONNECTOR_FILE,
    definition_of,
    settings_of,
)


@click.group()
def db() -> None:
    """The source database: roles, demo schema and publication."""


@db.command("init")
@CONNECTOR_FILE
@click.option(
    "--dry-run", is_flag=True, help="Print the SQL it would run (passwords redacted); change nothing."
)
@click.option(
    "--reset-passwords",
    is_flag=True,
    help="Also set the passwords of existing app and Debezium roles from settings (otherwise left as they are).",
)
@click.option(
    "--with-demo-schema",
    is_flag=True,
    help="Also create the demo tables (customers, products, orders), as `stack up` does locally.",
)
@click.pass_context
def db_init(
    ctx: click.Context, path: Path | None, dry_run: bool, reset_passwords: bool, with_demo_schema: bool
) -> None:
    """Prepare a running Postgres for CDC: roles, CDC tables, grants, publication. Additive and safe to rerun.

    Creates what is missing and changes nothing that exists: existing roles keep their passwords and
    attributes, the publication gains the connector's missing tables and keeps its others. Needs
    FEATURECTL_PG_ADMIN_PASSWORD (a superuser) and the captured tables to exist.
    """
    from stack.postgres import Postgres
    from stack.source_db import SourceInit

    settings = settings_of(ctx)
    init = SourceInit(
        settings,
        Postgres(settings).admin_conninfo,
        definition_of(path),
        demo_schema=with_demo_schema,
        reset_passwords=reset_passwords,
    )
    if dry_run:
        plan = init.plan()
        for statement in init.render(plan):
            click.echo(statement + "\n")
        for warning in plan.warnings:
            click.echo(f"-- warning: {warning}")
        click.echo(f"-- dry run: {len(plan.steps)} statement(s) not executed")
        return
    with init.exclusive():
        plan = init.plan()
        init.apply(plan)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}")
    click.echo(f"database {settings.pg_database} ready ({len(plan.steps)} statement(s) run)")


COMMANDS = [db]
