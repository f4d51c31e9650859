"""``featurectl``: the command users type. Subcommands: stack, connector, tail, demo."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from core.errors import ConfigError, FeatureCtlError
from core.settings import Settings, export_store_secrets, load_settings

if TYPE_CHECKING:
    from serving.feature_server import FeatureServer

logger = logging.getLogger("featurectl")


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _quiet_libraries(record: logging.LogRecord) -> bool:
    noisy = record.name.startswith(("great_expectations", "feast", "py.warnings"))
    return record.levelno >= logging.ERROR or not noisy


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


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Postgres CDC through Debezium and Kafka into a Feast feature store."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries that narrate every registry refresh and validation run (and reset their own
    # loggers' levels on import): filter at the handler, keeping their warnings.
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_libraries)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # What featurectl and the services it starts write (stores, history, Kafka logs, secrets) holds
    # source rows: readable by its owner only, from creation. Directories the postgres OS user must
    # traverse are given their modes explicitly (stack/postgres.py).
    os.umask(0o077)
    ctx.obj = load_settings()
    export_store_secrets(ctx.obj)


# --- stack -------------------------------------------------------------------------------------
@cli.group()
def stack() -> None:
    """The local stack: Postgres, Kafka (KRaft) and Kafka Connect with Debezium, as local processes."""


WITH_EXTRAS = click.option(
    "--with",
    "extras",
    multiple=True,
    type=click.Choice(["online-postgres", "redis"]),
    help="Also run this production store locally (repeatable; or FEATURECTL_STACK_EXTRAS): "
    "online-postgres = Postgres with pgvector, redis = Redis, as the online store.",
)


@stack.command("install")
@WITH_EXTRAS
@click.pass_context
def stack_install(ctx: click.Context, extras: tuple[str, ...]) -> None:
    """Install what the stack needs (Postgres package, Kafka/Connect/Debezium jars) without starting it."""
    from stack.launcher import LocalStack

    LocalStack(_settings(ctx)).install(extras)


@stack.command("up")
@WITH_EXTRAS
@click.pass_context
def stack_up(ctx: click.Context, extras: tuple[str, ...]) -> None:
    """Start every service that is not running yet (idempotent)."""
    from stack.launcher import LocalStack

    took = LocalStack(_settings(ctx)).up(extras=extras)
    click.echo(f"stack up ({took:.1f}s)")


@stack.command("down")
@click.option(
    "--wipe", is_flag=True, help="Also delete the data directory (database, topics, logs, secrets)."
)
@click.option(
    "--service",
    "services",
    multiple=True,
    type=click.Choice(["postgres", "kafka", "connect", "online-postgres", "redis"]),
    help="Stop only these services (repeatable).",
)
@click.pass_context
def stack_down(ctx: click.Context, wipe: bool, services: tuple[str, ...]) -> None:
    """Stop what `up` started (gracefully, then harder); keeps data unless --wipe."""
    from stack.launcher import LocalStack

    stopped = LocalStack(_settings(ctx)).down(wipe=wipe, services=services)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool) -> None:
    """Every service and connector with its state. Exits 1 if any service is not RUNNING."""
    from stack.launcher import LocalStack

    status = LocalStack(_settings(ctx)).status()
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


CONNECTOR_FILE = click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path),
    default=None,
    help="Connector definition (default connectors/shop-postgres.json).",
)


def _definition(path: Path | None) -> Any:
    from connectors.definition import DEFAULT_CONNECTOR, load_definition

    return load_definition(path or DEFAULT_CONNECTOR)


@cli.group()
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

    settings = _settings(ctx)
    init = SourceInit(
        settings,
        Postgres(settings).admin_conninfo,
        _definition(path),
        demo_schema=with_demo_schema,
        reset_passwords=reset_passwords,
    )
    plan = init.plan()
    if dry_run:
        for statement in init.render(plan):
            click.echo(statement + "\n")
        for warning in plan.warnings:
            click.echo(f"-- warning: {warning}")
        click.echo(f"-- dry run: {len(plan.steps)} statement(s) not executed")
        return
    init.apply(plan)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}")
    click.echo(f"database {settings.pg_database} ready ({len(plan.steps)} statement(s) run)")


# --- connector -----------------------------------------------------------------------------------
@cli.group()
def connector() -> None:
    """Deploy and supervise the Debezium connector through Kafka Connect's REST API."""


@connector.command("deploy")
@CONNECTOR_FILE
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for RUNNING.")
@click.pass_context
def connector_deploy(ctx: click.Context, path: Path | None, timeout: float) -> None:
    """Create or update the connector (idempotent) and wait until it and its tasks are RUNNING."""
    from connectors.deploy import deploy

    definition = _definition(path)
    deploy(_settings(ctx), definition, timeout)
    click.echo(f"connector {definition.name} RUNNING")


@connector.command("status")
@CONNECTOR_FILE
@click.pass_context
def connector_status(ctx: click.Context, path: Path | None) -> None:
    """Connector and task states (with the trace of a failed task)."""
    from connectors.client import ConnectClient

    click.echo(
        json.dumps(ConnectClient(_settings(ctx).connect_rest_url).status(_definition(path).name), indent=2)
    )


def _simple(action: str, help_text: str) -> None:
    @connector.command(action, help=help_text)
    @CONNECTOR_FILE
    @click.pass_context
    def command(ctx: click.Context, path: Path | None) -> None:
        from connectors.client import ConnectClient

        name = _definition(path).name
        getattr(ConnectClient(_settings(ctx).connect_rest_url), action)(name)
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

    remove(_settings(ctx), _definition(path), keep_slot=keep_slot)
    click.echo("connector deleted" + (" (slot kept)" if keep_slot else " and slot dropped"))


# --- streams -------------------------------------------------------------------------------------
@cli.command("tail")
@click.argument("tables", nargs=-1)
@CONNECTOR_FILE
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new events.")
@click.pass_context
def tail_cmd(ctx: click.Context, tables: tuple[str, ...], path: Path | None, follow: bool) -> None:
    """Print the change events of TABLES (schema.table; default: every captured table) from the start."""
    from streams.tail import render, tail

    definition = _definition(path)
    topics = [definition.topic_for(t) for t in (tables or definition.tables)]
    for event in tail(_settings(ctx).kafka_client(), topics, idle_timeout_s=None if follow else 5.0):
        click.echo(render(event))


@cli.command("feast-apply")
@CONNECTOR_FILE
@click.option(
    "--no-source-check",
    is_flag=True,
    help="Apply without checking the views' tables in Postgres (publication, partitions, generated columns).",
)
@click.pass_context
def feast_apply_cmd(ctx: click.Context, path: Path | None, no_source_check: bool) -> None:
    """Run `feast apply` in the feature repository, then re-embed views whose model changed.

    A changed `embedding.model` (or backend, or dimension) starts an empty vector table for the
    new model; this fills it from the texts in the online store, with progress, while the
    processor keeps running. Plain `feast apply` leaves that to `featurectl embeddings backfill`.
    """
    from stores.registry import vector_view_problems
    from stores.repository import declared_views, feast_apply, open_store
    from streams.routes import check_views

    settings = _settings(ctx)
    views = declared_views(settings.feature_repo)
    problems = check_views(views, settings.suites_dir)
    problems += vector_view_problems(open_store(settings), views)
    if not no_source_check:
        from connectors.capture import source_problems
        from stack.postgres import Postgres
        from streams.routes import route_for, source_columns, source_keys

        routes = [r for r in (route_for(v) for v in views) if r is not None]
        conninfo = Postgres(settings).app_conninfo()
        problems += source_problems(conninfo, _definition(path), source_columns(routes), source_keys(routes))
    if problems:
        raise ConfigError(
            "not applied: the stream processor could not materialise these views:\n  - "
            + "\n  - ".join(problems),
            "fix each view's tags or suite as its line says, then run `featurectl feast-apply` again",
        )
    feast_apply(settings.feature_repo)
    click.echo("feature repository applied")
    _backfill_pending(settings)


def _backfill_pending(settings: Settings, views: tuple[str, ...] = ()) -> None:
    from stores.reembed import pending_views, reembed
    from stores.repository import open_store

    store = open_store(settings)
    todo = views or tuple(pending_views(store))
    if not todo:
        click.echo("every embedding view is backfilled for its declared model")
    for view in todo:
        shown = [0]

        def progress(done: int, total: int, view: str = view, shown: list[int] = shown) -> None:
            if done == total or done - shown[0] >= max(total // 10, 1):
                click.echo(f"  {view}: {done}/{total} texts re-embedded", err=True)
                shown[0] = done

        result = reembed(store, view, progress=progress)
        click.echo(
            f"{view}: {result.vectors} vectors of model {result.model} "
            f"({result.embedded} texts embedded in {result.passes} pass(es), {result.seconds:.1f}s)"
        )


@cli.group()
def embeddings() -> None:
    """Embedding views: their models, backfills, and similarity search."""


@embeddings.command("status")
@click.pass_context
def embeddings_status(ctx: click.Context) -> None:
    """Each embedding view's declared model, vector count and backfill state."""
    from stores.reembed import model_states
    from stores.repository import open_store

    for st in model_states(open_store(_settings(ctx))):
        spec = st.spec
        state = (
            "not applied"
            if st.declared != spec.fingerprint
            else (f"backfilled {st.backfilled_at}" if st.backfilled_at else "backfill pending")
        )
        click.echo(
            f"{spec.view}: model {spec.model} ({spec.backend}, dim {spec.dim}, {spec.metric}) "
            f"text={','.join(spec.text_columns)} vectors={st.vectors} {state}"
        )


@embeddings.command("backfill")
@click.argument("views", nargs=-1)
@click.pass_context
def embeddings_backfill(ctx: click.Context, views: tuple[str, ...]) -> None:
    """Re-embed VIEWS (default: every view whose declared model is not backfilled). Idempotent."""
    _backfill_pending(_settings(ctx), views)


@cli.command("search")
@click.argument("view")
@click.argument("text")
@click.option("-k", "--top-k", default=5, show_default=True, help="How many nearest entities.")
@click.pass_context
def search_cmd(ctx: click.Context, view: str, text: str, top_k: int) -> None:
    """Entities of VIEW whose embedded text is nearest to TEXT (Feast retrieve_online_documents_v2)."""
    from embeddings.search import search
    from stores.repository import open_store

    hits = search(open_store(_settings(ctx)), view, text, k=top_k)
    if not hits:
        click.echo("no vectors in the online store yet")
    for rank, hit in enumerate(hits, 1):
        fields = ", ".join(f"{k}={v!r}"[:80] for k, v in hit.items() if k != "distance")
        click.echo(f"{rank}. distance={hit['distance']:.3f}  {fields}")


@cli.command("serve")
@click.option("--host", default=None, help="Listen address (default FEATURECTL_SERVE_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default FEATURECTL_SERVE_PORT, 6566).")
@METRICS_PORT
@click.pass_context
def serve_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the Feast feature server over the feature repository, in the foreground.

    It serves the online store the processor writes, while it writes. Ctrl-C/SIGTERM stops it.
    """
    from serving.feature_server import FeatureServer

    settings = _settings(ctx)
    server = FeatureServer(
        settings.feature_repo,
        host or settings.serve_host,
        port or settings.serve_port,
        metrics_port=ctx.meta.get("metrics_port"),  # Feast's own server metrics, on the same address
    )
    _run_server(
        server,
        f"feature server ready at {server.url} (repo {settings.feature_repo})\n"
        f"  curl -s -X POST {server.url}/get-online-features -H 'Content-Type: application/json' "
        """-d '{"features": ["customer_profile:segment"], "entities": {"customer_id": [1]}}'""",
    )


@cli.command("ui")
@click.option("--host", default=None, help="Listen address (default FEATURECTL_UI_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default FEATURECTL_UI_PORT, 8888).")
@click.pass_context
def ui_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run Feast's web UI over the feature repository, in the foreground (run `feast apply` first).

    It lists the feature views, entities and sources of the registry, with their tags. Ctrl-C/SIGTERM stops it.
    """
    from serving.feature_server import FeastUi

    settings = _settings(ctx)
    server = FeastUi(settings.feature_repo, host or settings.ui_host, port or settings.ui_port)
    _run_server(server, f"Feast UI ready: open {server.url} in a browser (repo {settings.feature_repo})")


def _run_server(server: FeatureServer, ready_message: str) -> None:
    """Start ``server``, print ``ready_message``, then wait for it; exit with its outcome.

    SIGTERM and Ctrl-C stop it cleanly (exit 0) at any point, start-up included.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM raises KeyboardInterrupt, like Ctrl-C
    try:
        server.start()
        assert server.proc is not None
        click.echo(ready_message)
        code = server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
        code = 0
    # Stopped by us (SIGTERM/Ctrl-C): a clean exit. Died on its own: its exit code.
    sys.exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)


def _serve_metrics(settings: Settings) -> None:
    """Serve /metrics if the command was given ``--metrics-port``."""
    port = click.get_current_context().meta.get("metrics_port")
    if port is not None:
        from core.metrics import serve

        serve(port, settings.metrics_host)


def _run_job(settings: Settings, name: str, schedule: str | None, job: Any) -> None:
    """Run ``job`` under its lock once, or every ``schedule`` interval (see jobs/schedule.py).

    Each run is recorded (monitoring/job_runs.py: ``featurectl health``, the job metrics)."""
    from jobs.lock import job_lock
    from jobs.schedule import parse_interval, run_every
    from monitoring.job_runs import recorded

    _serve_metrics(settings)

    def locked() -> None:
        with job_lock(settings.data_dir / "locks", name):
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


@cli.command("backfill")
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
    from jobs.pg_backfill import PostgresBackfill
    from stack.postgres import Postgres
    from stores.repository import open_store
    from streams.dlq import DeadLetterSink
    from validation.suites import SuiteStore
    from validation.validator import BatchValidator

    settings = _settings(ctx)

    def job() -> None:
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

    _run_job(settings, f"backfill-{view}", schedule, job)


@cli.command("materialize")
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
    from core.metrics import materialization_metrics
    from embeddings.spec import spec_for
    from jobs.materialize import Materializer
    from stores.reembed import reembed
    from stores.repository import open_store

    settings = _settings(ctx)

    def job() -> None:
        store = open_store(settings)
        materializer = Materializer(store, settings.data_dir / "jobs")
        for view in [store.get_feature_view(v) for v in views] or store.list_feature_views():
            with materialization_metrics(view.name):
                report = materializer.run(view, incremental)
            click.echo(
                f"materialize {view.name}: {report.files} history files, {report.history_rows} rows, "
                f"{report.entities} entities, "
                f"{report.applied} applied online (older than the online state: skipped)"
            )
            if spec_for(view) is not None and report.entities:
                result = reembed(store, view.name)
                click.echo(f"  {view.name}: {result.embedded} texts re-embedded, {result.vectors} vectors")

    _run_job(settings, "materialize", schedule, job)


@cli.command("compact")
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
    """Rewrite the offline history of VIEWS (default: all) into few sorted files, duplicates removed.

    A Delta history is rewritten one day (event_date partition) at a time, only the days with more files
    than they need, then vacuumed. Safe while the processor runs (files landing meanwhile are kept for
    the next run). Waits for nothing: if a materialize or a backfill of a view is running, it stops and
    says so.
    """
    from jobs.compact import compact
    from jobs.lock import job_lock
    from stores.history.reader import is_delta
    from stores.repository import open_store

    settings = _settings(ctx)
    locks = settings.data_dir / "locks"

    def job() -> None:
        store = open_store(settings)
        for view in [store.get_feature_view(v) for v in views] or store.list_feature_views():
            # Our own readers of the history must not have its files moved under them.
            with job_lock(locks, "materialize"), job_lock(locks, f"backfill-{view.name}"):
                report = compact(store, view, rows_per_file)
            days = (
                f"{report.days} day(s) rewritten, {report.days_deferred} left for the next run "
                f"(still receiving rows), {report.vacuumed} replaced file(s) vacuumed; "
                if is_delta(view)
                else ""
            )
            click.echo(
                f"compact {view.name}: {days}{report.files_before} files -> {report.files_after}, "
                f"{report.rows_before} rows -> {report.rows_after} "
                f"({report.duplicates} duplicates, {report.superseded} superseded within a transaction)"
            )

    _run_job(settings, "compact", schedule, job)


@cli.command("snapshot")
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
    from connectors.deploy import debezium_conninfo
    from jobs.snapshot import snapshot

    settings = _settings(ctx)
    definition = _definition(path)

    def job() -> None:
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

    _run_job(settings, f"snapshot-{definition.name}", schedule, job)


@cli.command("verify")
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
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    views: tuple[str, ...],
    chunk: int,
    do_repair: bool,
    wait_s: float,
    show: int,
    path: Path | None,
) -> None:
    """Compare the online store with Postgres row by row (VIEWS, or every CDC view); exit 1 on any mismatch."""
    from connectors.deploy import debezium_conninfo
    from jobs.snapshot import key_filters, snapshot
    from jobs.verify import Verifier, repair
    from stack.postgres import Postgres
    from stores.repository import open_store
    from streams.routes import route_for

    settings = _settings(ctx)
    store = open_store(settings)
    pg = Postgres(settings)
    selected = [store.get_feature_view(v) for v in views] or [
        v for v in store.list_feature_views() if v.tags.get("cdc.table")
    ]
    definition = _definition(path)
    # Repairs signal as Debezium's role (INSERT on the signal table only), not a superuser.
    signaller = debezium_conninfo(settings) if do_repair else ""
    remaining = 0
    for view in selected:
        verifier = Verifier(store, pg.app_conninfo(), view, chunk)
        report = verifier.run()
        click.echo(
            f"{view.name} ({report.table}): {report.checked} rows, {len(report.mismatches)} mismatches"
        )
        for mismatch in report.mismatches[:show]:
            click.echo(f"  {mismatch}")
        if report.mismatches and do_repair:
            route = route_for(view)
            assert route is not None

            def restream(conditions: dict[str, str], table: str = route.table) -> object:
                return snapshot(
                    settings.kafka_client(),
                    signaller,
                    definition,
                    [table],
                    wait_s,
                    conditions,
                    connect_url=settings.connect_rest_url,
                )

            def filters(table: str, columns: list[str], keys: list[tuple[Any, ...]]) -> list[str]:
                return key_filters(signaller, definition, table, columns, keys)

            streamed, deleted = repair(report, store, route, restream, filters)
            click.echo(f"  repair: {streamed} re-streamed, {deleted} deleted; checking them again")
            report = verifier.recheck(report, wait_s)
            click.echo(f"  after repair: {len(report.mismatches)} mismatches")
            for mismatch in report.mismatches[:show]:
                click.echo(f"  {mismatch}")
        remaining += len(report.mismatches)
    if remaining:
        raise FeatureCtlError(
            f"the online store differs from Postgres in {remaining} entities",
            "run `featurectl verify --repair` (the connector must capture the signal table), "
            "and see `featurectl dlq list` for rows the processor refused",
        )
    click.echo("the online store equals Postgres")


@cli.command("process")
@CONNECTOR_FILE
@click.option("--group", default=None, help="Consumer group (default FEATURECTL_PROCESSOR_GROUP).")
@click.option(
    "--accept-gaps",
    is_flag=True,
    help="Read on past changes the topics' retention deleted unread (each gap is logged); "
    "then repair with `featurectl verify --repair`.",
)
@METRICS_PORT
@click.pass_context
def process_cmd(ctx: click.Context, path: Path | None, group: str | None, accept_gaps: bool) -> None:
    """Run the stream processor in the foreground (Ctrl-C/SIGTERM: finish the batch, commit, exit 0).

    Run several copies with the same group to share the topics' partitions. Stops with an error if
    changes were deleted by retention before it read them (see --accept-gaps).
    """
    import signal
    import threading

    from monitoring.watch import source_watch
    from stores.repository import open_store
    from streams.processor import Processor, ProcessorConfig

    settings = _settings(ctx)
    if settings.processor_nice:
        os.nice(settings.processor_nice)  # lookups before ingest on a shared host (settings.processor_nice)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    definition = _definition(path)
    config = ProcessorConfig.from_settings(settings, definition.topic_prefix, group, accept_gaps)
    _serve_metrics(settings)
    watch = source_watch(settings, definition)
    watch.start()
    try:
        Processor(settings, open_store(settings), config).run(stop)
    finally:
        watch.stop()


@cli.command("health")
@CONNECTOR_FILE
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def health_cmd(ctx: click.Context, path: Path | None, as_json: bool) -> None:
    """Services, connector, replication slot WAL, lag, per-view last change, dead letters, jobs.

    Exits 1 when something needs action, saying what (see monitoring/health.py).
    """
    from monitoring.health import HealthCheck
    from stack.postgres import Postgres
    from stores.history.reader import History
    from stores.repository import open_store
    from streams.routes import route_for, source_columns, source_keys

    settings = _settings(ctx)
    store = open_store(settings)
    views = [
        (view.name, History(store, view).last_change)
        for view in store.list_feature_views()
        if view.tags.get("cdc.table")
    ]
    routes = [r for r in (route_for(v) for v in store.list_feature_views()) if r is not None]
    health = HealthCheck(
        settings,
        _definition(path),
        views,
        Postgres(settings).app_conninfo(),
        sources=source_columns(routes),
        keys=source_keys(routes),
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


@cli.group()
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
    sink = open_online_sink(open_store(_settings(ctx)))
    try:
        held = sink.reset()
    finally:
        sink.close()
    click.echo(
        f"online store emptied ({held} entities); now start the processor and run `featurectl snapshot`"
    )


@cli.group()
def dlq() -> None:
    """The dead-letter topic: records that could not be materialised, with the reason."""


@dlq.command("list")
@click.option("--limit", type=int, default=None, help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.pass_context
def dlq_list(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """Print the dead letters, oldest first."""
    from jobs.replay import list_dead_letters

    letters = list_dead_letters(_settings(ctx), limit)
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
        click.echo(f"{len(letters)} dead letter(s) in {_settings(ctx).dlq_topic}")


@dlq.command("replay")
@click.pass_context
def dlq_replay(ctx: click.Context) -> None:
    """Re-process dead letters not replayed before; rows are validated again with the current suites."""
    from jobs.replay import replay
    from stores.repository import open_store

    settings = _settings(ctx)
    result = replay(settings, open_store(settings))
    click.echo(
        f"replayed {result.replayed}: {result.materialised} rows online, {result.history} backfill rows into "
        f"history, {result.dead_again} dead-lettered again"
    )


@cli.command("demo")
@click.pass_context
def demo_cmd(ctx: click.Context) -> None:
    """The main job: stack up, connector deployed, demo rows changed, change events printed."""
    from featurectl import demo

    demo.main(_settings(ctx))


def main() -> None:
    try:
        cli(standalone_mode=False)
    except FeatureCtlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
