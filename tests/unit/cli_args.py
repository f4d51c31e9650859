"""What the deployment files (docker-compose.yml, deploy/kubernetes/) give featurectl as arguments, parsed by
featurectl's own command line without running it: a typo in a command or an option fails a unit test, not a
container at start."""

from __future__ import annotations

from collections.abc import Sequence

import click

from featurectl.cli import cli


def parse_featurectl(args: Sequence[str]) -> click.Command:
    """The featurectl command ``args`` name, after click has parsed all of them (UsageError if it cannot)."""
    command: click.Command = cli
    ctx = cli.make_context("featurectl", list(args))
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]  # what the group leaves to its subcommand
        sub, found, rest = command.resolve_command(ctx, rest)
        assert found is not None and sub, f"featurectl {' '.join(args)}: no such command"
        command = found
        ctx = command.make_context(sub, rest, parent=ctx)
    return command
