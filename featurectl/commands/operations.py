"""Running the stream: `process`, `health`, `online reset`, `dlq ...`, `demo`."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.errors import ConfigError
from featurectl.options import (
    CONNECTOR_FILE,
    METRICS_PORT,
    definition_of,
    settings_of,
)

logger = logging.getLogger(__name__)


@click.command("process")
@CONNECTOR_FILE
@click.option("--group", default=None, help="Consumer group (default FEATURECTL_PROCESSOR_GROUP).")
@click.option(
    "--accept-gaps",
    is_flag=True,
    help="Read on past changes the topics' retention deleted unread (each gap is logged); "
    "then repair with `featurectl verify --repair`.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processor processes on this host sharing the group's partitions (about one core each; "
    "Postgres and Redis stores: SQLite serialises its writers). Worker i serves metrics on "
    "--metrics-port + 10*i.",
)
@METRICS_PORT
@click.pass_context
def process_cmd(
    ctx: click.Context, path: Path | None, group: str | None, accept_gaps: bool, workers: int
) -> None:
    """Run the stream processor in the foreground (Ctrl-C/SIGTERM: finish the batch, commit, exit 0).

    Run several copies with the same group to share the topics' partitions, on one host with
    --workers N (a worker killed by a signal is started again; one that fails stops them all).
    Stops with an error if changes were deleted by retention before it read them (see --accept-gaps).
    """
    import functools

    from streams.processor import ProcessorConfig
    from streams.workers import run_workers

    settings = settings_of(ctx)
    if settings.processor_nice:
        os.nice(settings.processor_nice)  # lookups before ingest on a shared host (settings.processor_nice)
    config = ProcessorConfig.from_settings(settings, definition_of(path).topic_prefix, group, accept_gaps)
    port: int | None = ctx.meta.get("metrics_port")
    if workers == 1:
        _run_processor(settings, path, config, port, watch=True)
        return
    verbose = bool(ctx.find_root().params.get("verbose"))
    sys.exit(run_workers(functools.partial(_worker, settings, path, config, port, verbose), workers))


def _worker(
    settings: Any,
    path: Path | None,
    config: Any,
    port: int | None,
    verbose: bool,
    index: int,
    ready: Callable[[], None],
    stop: threading.Event,
) -> None:
    """One of ``process --workers N``, in a spawned interpreter: set up as the CLI would, then run."""
    from core.errors import EXIT_FAILED, EXIT_TRANSIENT, FeatureCtlError
    from featurectl import logs

    logs.configure(verbose)
    os.umask(0o077)
    try:
        if index == 0:
            from stores.registry import kind_of, kinds
            from stores.repository import open_store

            kind = kind_of(open_store(settings))
            if not kind.parallel_writes:
                scaling = ", ".join(k.label for k in kinds() if k.parallel_writes)
                logger.warning(
                    "--workers on the %s online store: its writers take turns, so more workers add no "
                    "throughput (docs/processor.md); these stores scale with workers: %s",
                    kind.label,
                    scaling,
                )
        worker_port = None if port is None else port + 10 * index
        _run_processor(settings, path, config, worker_port, watch=index == 0, ready=ready, stop=stop)
    except FeatureCtlError as exc:
        logger.error("worker %d: %s", index, exc)
        sys.exit(EXIT_TRANSIENT if exc.transient else EXIT_FAILED)


def _run_processor(
    settings: Any,
    path: Path | None,
    config: Any,
    port: int | None,
    watch: bool,
    ready: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """The processor until SIGTERM/SIGINT (or ``stop``, a worker's, already wired to them); with ``watch``,
    the source watch beside it (one per host)."""
    import signal

    from core.metrics import serve
    from monitoring.watch import source_watch
    from stores.repository import open_store
    from streams.processor import Processor

    if stop is None:
        stop = event = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: event.set())
    if port is not None:
        serve(port, settings.metrics_host)
    source = source_watch(settings, definition_of(path)) if watch else None
    if source is not None:
        source.start()
    try:
        Processor(settings, open_store(settings), config).run(stop, ready)
    finally:
        if source is not None:
            source.stop()


@click.command("health")
@CONNECTOR_FILE
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def health_cmd(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Services (the online store and the offline history's storage too), connector, replication slot WAL, lag,
    per-view last change, dead letters, jobs.

    Exits 1 when something needs action, saying what (see monitoring/health.py).
    """
    from monitoring.health import HealthCheck
    from stack.postgres import Postgres
    from stores.repository import open_store

    settings = settings_of(ctx)
    health = HealthCheck.for_repository(
        settings, open_store(settings), definition_of(path), Postgres(settings).app_conninfo()
    ).run()
    if as_json:
        click.echo(json.dumps(health.as_json(), indent=2, default=str))
    else:
        for check in health.checks:
            click.echo(f"{check.status.upper():<5} {check.name:<24} {check.summary}")
        for check in health.needs_action:
            click.echo(f"\nneeds action: {check.name}: {check.summary}\n  fix: {check.action}")
    if health.needs_action:
        sys.exit(1)


@click.group()
def online() -> None:
    """The online store the processor writes."""


@online.command("reset")
@click.option("--yes", is_flag=True, help="Really empty it (required).")
@click.pass_context
def online_reset(ctx: click.Context, yes: bool) -> None:
    """Empty the online store (features, vectors, versions), for a source that was replaced.

    Run it with every processor stopped, after the processor stopped saying the source's WAL positions
    went backwards; then start the processor and `featurectl snapshot` the captured tables.
    """
    from stores.registry import open_online_sink
    from stores.repository import open_store

    if not yes:
        raise ConfigError("not reset: this empties the online store", "add --yes to confirm")
    sink = open_online_sink(open_store(settings_of(ctx)))
    try:
        held = sink.reset()
    finally:
        sink.close()
    click.echo(
        f"online store emptied ({held} entities); now start the processor and run `featurectl snapshot`"
    )


@click.group()
def dlq() -> None:
    """The dead-letter topic: records that could not be materialised, with the reason."""


@dlq.command("list")
@click.option("--limit", type=int, default=None, help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.pass_context
def dlq_list(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """Print the dead letters, oldest first."""
    from jobs.replay import list_dead_letters

    letters = list_dead_letters(settings_of(ctx), limit)
    for _msg, letter in letters:
        if as_json:
            click.echo(letter.to_json().decode())
            continue
        click.echo(
            f"{letter.topic}[{letter.partition}] offset={letter.offset}  view={letter.feature_view}  "
            f"attempt={letter.attempt}  at {letter.dead_lettered_at}\n  reason: {letter.reason}"
        )
        for f in letter.failed_expectations:
            click.echo(f"  failed: {f['expectation']}({f['column']}) value={f['value']!r}")
    if not as_json:
        click.echo(f"{len(letters)} dead letter(s) in {settings_of(ctx).dlq_topic}")


@dlq.command("replay")
@click.pass_context
def dlq_replay(ctx: click.Context) -> None:
    """Re-process dead letters not replayed before; rows are validated again with the current suites."""
    from jobs.replay import replay
    from stores.repository import open_store

    settings = settings_of(ctx)
    result = replay(settings, open_store(settings))
    click.echo(
        f"replayed {result.replayed}: {result.materialised} rows online, {result.history} backfill rows into "
        f"history, {result.dead_again} dead-lettered again"
    )


@click.command("demo")
@click.pass_context
def demo_cmd(ctx: click.Context) -> None:
    """The main job: stack up, connector deployed, demo rows changed, change events printed."""
    from featurectl import demo

    demo.main(settings_of(ctx))


COMMANDS = [process_cmd, health_cmd, online, dlq, demo_cmd]
