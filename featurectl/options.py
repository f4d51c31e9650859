"""What the command modules share: the settings of the invocation, common options, and how a job or a
server is run (locks, schedules, metrics, signals)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from core.settings import Settings

if TYPE_CHECKING:
    from serving.feature_server import FeatureServer

logger = logging.getLogger(__name__)


def settings_of(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _remember_metrics_port(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    ctx.meta["metrics_port"] = value


METRICS_PORT = click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    expose_value=False,
    callback=_remember_metrics_port,
    help="Serve Prometheus metrics on this port (/metrics; address FEATURECTL_METRICS_HOST).",
)


CONNECTOR_FILE = click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path),
    default=None,
    help="Connector definition (default connectors/shop-postgres.json).",
)


def definition_of(path: Path | None) -> Any:
    from connectors.definition import DEFAULT_CONNECTOR, load_definition

    return load_definition(path or DEFAULT_CONNECTOR)


def run_server(server: FeatureServer, ready_message: str) -> None:
    """Start ``server``, print ``ready_message``, then wait for it; exit with its outcome.

    SIGTERM and Ctrl-C stop it cleanly (exit 0) at any point, start-up included.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM raises KeyboardInterrupt, like Ctrl-C
    try:
        server.start()
        click.echo(ready_message)
        code = server.wait()
    except KeyboardInterrupt:
        server.stop()
        code = 0
    # Stopped by us (SIGTERM/Ctrl-C): a clean exit. Died on its own: its exit code.
    sys.exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)


def serve_metrics(settings: Settings) -> None:
    """Serve /metrics if the command was given ``--metrics-port``."""
    port = click.get_current_context().meta.get("metrics_port")
    if port is not None:
        from core.metrics import serve

        serve(port, settings.metrics_host)


def run_job(settings: Settings, name: str, schedule: str | None, job: Any) -> None:
    """Run ``job`` under its lock once, or every ``schedule`` interval (see jobs/schedule.py).

    Each run is recorded (monitoring/job_runs.py: ``featurectl health``, the job metrics)."""
    from jobs.lock import job_lock
    from jobs.schedule import parse_interval, run_every
    from monitoring.job_runs import recorded

    serve_metrics(settings)

    def locked() -> None:
        with job_lock(settings.data_dir / "locks", name):
            logger.info("%s: started (its lock held)", name)
            recorded(settings.data_dir, name, job)

    if schedule is None:
        locked()
    else:
        run_every(parse_interval(schedule), locked, name)


def SCHEDULE(f: Any) -> Any:
    """``--schedule INTERVAL`` and ``--metrics-port`` (worth it for a scheduled job) on a job command."""
    f = METRICS_PORT(f)
    return click.option(
        "--schedule",
        default=None,
        metavar="INTERVAL",
        help="Run now and then every INTERVAL (e.g. 15m, 1h) until stopped.",
    )(f)
