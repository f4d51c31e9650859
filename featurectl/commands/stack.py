"""`featurectl stack`: the local services (Postgres, Kafka, Connect, the production stores)."""

from __future__ import annotations

import json
import sys

import click

from featurectl.options import (
    settings_of,
)
from stores.registry import local_services

# Each online store's local server, as its folder declares it (stores/<name>/__init__.py, KIND.local).
STORE_SERVERS = {name: kind.label for name, kind in local_services().items()}


@click.group()
def stack() -> None:
    """The local stack: Postgres, Kafka (KRaft) and Kafka Connect with Debezium, as local processes."""


WITH_EXTRAS = click.option(
    "--with",
    "extras",
    multiple=True,
    type=click.Choice([*STORE_SERVERS, "prometheus", "keycloak"]),
    help="Also run this service locally (repeatable; or FEATURECTL_STACK_EXTRAS): an online store's local server ("
    + ", ".join(f"{name} = {label}" for name, label in STORE_SERVERS.items())
    + "; also when feature_store.yaml names it), prometheus = Prometheus with the alert rules, scraping "
    "featurectl's /metrics ports (or FEATURECTL_MONITORING=1), or keycloak = Keycloak, the OIDC provider of "
    "`featurectl serve` and `ui` (also when feature_store.yaml's auth: names it).",
)


@stack.command("install")
@WITH_EXTRAS
@click.option(
    "--all-stores",
    is_flag=True,
    help="Install every online store's packages and local server (as if each were named with --with).",
)
@click.option(
    "--spark",
    is_flag=True,
    help="Also install the `spark` extra (pyspark) and fetch Delta Lake's Spark jars, for the Spark offline store.",
)
@click.option(
    "--airflow",
    is_flag=True,
    help="Also install Apache Airflow in a virtualenv of its own (in the cache), to run jobs/airflow_dags/ "
    "locally; prints its `airflow` executable.",
)
@click.pass_context
def stack_install(
    ctx: click.Context, extras: tuple[str, ...], all_stores: bool, spark: bool, airflow: bool
) -> None:
    """Install what the stack needs (Postgres package, Kafka/Connect/Debezium jars) without starting it."""
    from stack.launcher import LocalStack

    settings = settings_of(ctx)
    LocalStack(settings).install((*extras, *(STORE_SERVERS if all_stores else ())))
    if spark:
        from stack.spark import ensure_delta_jars

        ensure_delta_jars(settings)
    if airflow:
        from stack.airflow import ensure_airflow

        click.echo(f"airflow: {ensure_airflow(settings)}")


@stack.command("up")
@WITH_EXTRAS
@click.pass_context
def stack_up(ctx: click.Context, extras: tuple[str, ...]) -> None:
    """Start every service that is not running yet (idempotent)."""
    from stack.launcher import LocalStack

    took = LocalStack(settings_of(ctx)).up(extras=extras)
    click.echo(f"stack up ({took:.1f}s)")


@stack.command("down")
@click.option(
    "--wipe", is_flag=True, help="Also delete the data directory (database, topics, logs, secrets)."
)
@click.option(
    "--service",
    "services",
    multiple=True,
    type=click.Choice(["postgres", "kafka", "connect", *STORE_SERVERS, "prometheus", "keycloak"]),
    help="Stop only these services (repeatable).",
)
@click.pass_context
def stack_down(ctx: click.Context, wipe: bool, services: tuple[str, ...]) -> None:
    """Stop what `up` started (gracefully, then harder); keeps data unless --wipe."""
    from stack.launcher import LocalStack

    stopped = LocalStack(settings_of(ctx)).down(wipe=wipe, services=services)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool) -> None:
    """Every service and connector with its state. Exits 1 if any service is not RUNNING."""
    from stack.launcher import LocalStack

    status = LocalStack(settings_of(ctx)).status()
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
    else:
        for s in status.services:
            pid = f"pid {s.pid}" if s.pid else ""
            click.echo(f"{s.name:<15} {s.state:<10} {s.address:<28} {pid} {s.detail}".rstrip())
        for c in status.connectors:
            tasks = ", ".join(f"task {t['id']} {t['state']}" for t in c["tasks"])  # type: ignore[attr-defined]
            click.echo(f"connector       {c['state']:<10} {c['name']:<28} {tasks}")
    if any(s.state != "RUNNING" for s in status.services):
        sys.exit(1)


@stack.command("token")
@click.argument("client", type=click.Choice(["model-service", "analytics"]))
@click.pass_context
def stack_token(ctx: click.Context, client: str) -> None:
    """Print an access token of the local Keycloak's service-account CLIENT, for a request by hand:

    curl -H "Authorization: Bearer $(featurectl stack token model-service)" ...

    model-service reads every feature; analytics is refused the views tagged pii=true (feature_repo/permissions.py).
    Tokens last 5 minutes.
    """
    from stack.keycloak import Keycloak

    click.echo(Keycloak(settings_of(ctx)).token(client))


COMMANDS = [stack]


@stack.command("image")
@click.option("--tag", default=None, help="Tag of the image (default localhost/featurectl:dev).")
@click.option(
    "--base",
    default="debian",
    show_default=True,
    help="What to build on: `debian` (a base made here from Debian's packages, for hosts that reach no image "
    "registry), `default` (the Dockerfile's own, the official Python image) or any image reference.",
)
@click.pass_context
def stack_image(ctx: click.Context, tag: str | None, base: str) -> None:
    """Build the project's image (Dockerfile) with podman, on a host without a Docker engine (root).

    One image for every role: `process`, `serve`, `ui` and each job are its arguments (docs/deploy.md)."""
    from stack.image import IMAGE, build

    size = build(settings_of(ctx), tag or IMAGE, None if base == "default" else base)
    click.echo(f"{tag or IMAGE}: {size / 1e9:.2f} GB")
