"""The batch jobs: `backfill`, `materialize`, `compact`, `snapshot`, `verify`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from core.errors import FeatureCtlError
from featurectl.options import (
    CONNECTOR_FILE,
    SCHEDULE,
    definition_of,
    run_job,
    settings_of,
)

logger = logging.getLogger(__name__)


@click.command("backfill")
@click.argument("view")
@click.option("--chunk", default=5000, show_default=True, help="Rows per query and per Parquet file.")
@click.option("--timestamp-column", default=None, help="Source column to use as event time (default: now).")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint of an interrupted run; start over.")
@SCHEDULE
@click.pass_context
def backfill_cmd(
    ctx: click.Context,
    view: str,
    chunk: int,
    timestamp_column: str | None,
    restart: bool,
    schedule: str | None,
) -> None:
    """Backfill VIEW's offline history from its Postgres table (resumable, idempotent)."""
    settings = settings_of(ctx)

    def job() -> None:
        # Imported under the job's lock: a run that finds it held says so at once (Feast and Great
        # Expectations take seconds to import).
        from jobs.pg_backfill import PostgresBackfill
        from stack.postgres import Postgres
        from stores.repository import open_store
        from streams.dlq import DeadLetterSink
        from validation.suites import SuiteStore
        from validation.validator import BatchValidator

        backfill = PostgresBackfill(
            open_store(settings),
            Postgres(settings).app_conninfo(),
            view,
            settings.data_dir / "jobs",
            BatchValidator(SuiteStore(settings.suites_dir)),
            DeadLetterSink(settings.kafka_client(), settings.dlq_topic),
            chunk,
            timestamp_column,
        )
        report = backfill.run(restart)
        click.echo(
            f"backfill {view} from {report.table}: {report.read} rows read, {report.written} written, "
            f"{report.unchanged} unchanged, {report.dead_lettered} dead-lettered"
            + (f" (resumed after key {report.resumed_from})" if report.resumed_from else "")
        )

    run_job(settings, f"backfill-{view}", schedule, job)


@click.command("materialize")
@click.argument("views", nargs=-1)
@click.option("--incremental", is_flag=True, help="Only history ingested since the last run.")
@SCHEDULE
@click.pass_context
def materialize_cmd(
    ctx: click.Context, views: tuple[str, ...], incremental: bool, schedule: str | None
) -> None:
    """Load the offline history's latest state of VIEWS (default: all) into the online store.

    For a new online store run `featurectl feast-apply` first (it creates the tables).
    """
    settings = settings_of(ctx)

    def job() -> None:
        from jobs.materialize import materialize_views
        from stores.repository import open_store

        materialize_views(open_store(settings), settings.data_dir / "jobs", views, incremental, click.echo)

    run_job(settings, "materialize", schedule, job)


@click.command("compact")
@click.argument("views", nargs=-1)
@click.option(
    "--rows-per-file",
    default=2_000_000,
    show_default=True,
    help="Largest compacted file, in rows (Parquet-directory histories; a Delta history's files are ~256 MB).",
)
@SCHEDULE
@click.pass_context
def compact_cmd(ctx: click.Context, views: tuple[str, ...], rows_per_file: int, schedule: str | None) -> None:
    """Rewrite the offline history of VIEWS (default: all) into few sorted files, duplicates removed, and
    remove from the online store the values past their view's ttl (reads serve them as expired already).

    A Delta history is rewritten one day (event_date partition) at a time, only the days with more files
    than they need, then vacuumed. Safe while the processor runs (files landing meanwhile are kept for
    the next run). Waits for nothing: if a materialize or a backfill of a view is running, it stops and
    says so.
    """
    settings = settings_of(ctx)

    def job() -> None:
        from jobs.compact import compact_views
        from stores.repository import open_store

        compact_views(open_store(settings), settings.data_dir / "locks", views, rows_per_file, click.echo)

    run_job(settings, "compact", schedule, job)


@click.command("snapshot")
@click.argument("tables", nargs=-1, required=True)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Return once Debezium reports it completed; fail at once if it skips a table or the connector fails.",
)
@click.option(
    "--stall",
    "stall_s",
    type=float,
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="With --wait: a started snapshot with no progress report for this long is stalled (stopped, exit 1).",
)
@CONNECTOR_FILE
@SCHEDULE
@click.pass_context
def snapshot_cmd(
    ctx: click.Context,
    tables: tuple[str, ...],
    wait_s: float | None,
    stall_s: float,
    path: Path | None,
    schedule: str | None,
) -> None:
    """Re-stream TABLES (schema.table) through the live pipeline: a Debezium incremental snapshot."""
    settings = settings_of(ctx)
    definition = definition_of(path)

    def job() -> None:
        from connectors.deploy import debezium_conninfo
        from jobs.snapshot import snapshot

        # Signalled as the least-privilege Debezium role (INSERT on the signal table only), not a superuser.
        signal_id = snapshot(
            settings.kafka_client(),
            debezium_conninfo(settings),
            definition,
            list(tables),
            wait_s,
            connect_url=settings.connect_rest_url,
            stall_s=stall_s,
        )
        click.echo(
            f"incremental snapshot {signal_id} of {', '.join(tables)} "
            + ("completed" if wait_s else "requested")
        )

    run_job(settings, f"snapshot-{definition.name}", schedule, job)


@click.command("verify")
@click.argument("views", nargs=-1)
@click.option("--chunk", type=int, default=5000, show_default=True, help="Rows per query.")
@click.option(
    "--repair", "do_repair", is_flag=True, help="Re-stream mismatched keys, delete keys Postgres lacks."
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=600,
    show_default=True,
    help="With --repair: how long to wait for it.",
)
@click.option("--show", type=int, default=20, show_default=True, help="Mismatches to print per view.")
@CONNECTOR_FILE
@SCHEDULE
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    views: tuple[str, ...],
    chunk: int,
    do_repair: bool,
    wait_s: float,
    show: int,
    path: Path | None,
    schedule: str | None,
) -> None:
    """Compare the online store with Postgres row by row (VIEWS, or every CDC view); exit 1 on any mismatch
    (a scheduled run records the failure instead: `featurectl health`, the job metrics and their alert)."""
    from stack.postgres import Postgres

    settings = settings_of(ctx)
    # What it needs besides the registry first: a missing password or connector file fails before Feast loads.
    conninfo = Postgres(settings).app_conninfo()
    definition = definition_of(path)
    logger.info("verify: reading the feature registry %s", settings.feature_repo)
    from jobs.verify import verify_views
    from stores.repository import open_store

    def job() -> None:
        store = open_store(settings)
        remaining = verify_views(
            settings,
            store,
            definition,
            [store.get_feature_view(v) for v in views],
            conninfo,
            chunk,
            do_repair,
            wait_s,
            show,
            click.echo,
        )
        if remaining:
            raise FeatureCtlError(
                f"the online store differs from Postgres in {remaining} entities",
                "run `featurectl verify --repair` (the connector must capture the signal table), "
                "and see `featurectl dlq list` for rows the processor refused",
            )
        click.echo("the online store equals Postgres")

    run_job(settings, "verify", schedule, job)


COMMANDS = [backfill_cmd, materialize_cmd, compact_cmd, snapshot_cmd, verify_cmd]
