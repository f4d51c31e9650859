"""`featurectl verify` and `verify --repair` at size, for the key shapes tables really have.

    .venv/bin/python -m bench.repair_bench                       # 100,000 entities per shape
    .venv/bin/python -m bench.repair_bench --rows 2000 --shapes bigint_date

Per shape (a composite key of bigint and date, of uuid and text, a single uuid): a table of ``--rows`` rows,
captured and applied by a processor, then every entity planted wrong online; timed: `verify` (finds them
all), `verify --repair` (re-streams them through one Debezium incremental snapshot filtered to their keys,
waits for the processor, checks them again: 0 left), and as the anchor, in the same run, `featurectl snapshot`
of the whole table (Debezium re-reading every row, and the processor applying them).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from feast import FeatureStore
from psycopg import sql

from bench.common import cleanup, repo_and_connector
from connectors.deploy import deploy
from connectors.pgtypes import client_key
from core.settings import PROJECT_ROOT, Settings, load_settings
from stack.launcher import LocalStack
from stack.postgres import Postgres
from stores.registry import open_online_sink
from stores.repository import feast_apply
from stores.sink import UPSERT, SinkRow
from streams.offsets import watermarks
from streams.routes import route_for

SHAPES: dict[str, tuple[str, str, str, str]] = {
    # shape: (columns DDL, rows from generate_series(1, N) i, entities (join key, ValueType), cdc.key)
    "bigint_date": (
        "id bigint, day date, title text NOT NULL, PRIMARY KEY (id, day)",
        "SELECT i, date '2026-01-01' + (i % 365), 'row ' || i FROM generate_series(1, {n}) i",
        "rid:INT64,rday:STRING",
        "rid=id,rday=day::date",
    ),
    "uuid_text": (
        "id uuid, region text, title text NOT NULL, PRIMARY KEY (id, region)",
        "SELECT gen_random_uuid(), 'region ' || (i % 50) || ' ü''s', 'row ' || i FROM generate_series(1, {n}) i",
        "rid:STRING,rregion:STRING",
        "rid=id,rregion=region",
    ),
    "uuid": (
        "id uuid PRIMARY KEY, title text NOT NULL",
        "SELECT gen_random_uuid(), 'row ' || i FROM generate_series(1, {n}) i",
        "rid:STRING",
        "rid=id",
    ),
}
VIEW = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Int64, String

{entities}
repair_rows = FeatureView(
    name="repair_rows", entities=[{names}], ttl=timedelta(0),
    schema=[{fields}, Field(name="title", dtype=String)],
    source=PushSource(name="repair_rows_push", batch_source=FileSource(
        name="repair_rows_history", path="data/offline/repair_rows",
        timestamp_field="event_timestamp", created_timestamp_column="ingested_at")),
    tags={{"cdc.table": "public.{table}", "cdc.key": "{key}"}},
)
"""


def cli(
    env: dict[str, str], *args: str, timeout: float = 3600
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from featurectl.cli import main; main()", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}, cwd=PROJECT_ROOT,
    )  # fmt: skip
    return time.monotonic() - started, done


def caught_up(settings: Settings, topic: str, rows: int, timeout_s: float = 1800) -> float:
    """Seconds until the processor's group has committed ``rows`` messages of ``topic`` (every sink wrote)."""
    started = time.monotonic()
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.processor_group}
    )
    try:
        while time.monotonic() - started < timeout_s:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is not None and meta.partitions:
                parts = [TopicPartition(topic, p) for p in meta.partitions]
                ends = [watermarks(consumer, p)[1] for p in parts]
                done = consumer.committed(parts, timeout=10)
                if sum(ends) >= rows and all(c.offset >= e for c, e in zip(done, ends, strict=True) if e > 0):
                    return time.monotonic() - started
            time.sleep(0.5)
    finally:
        consumer.close()
    raise SystemExit(f"the processor did not apply {rows} rows of {topic} in {timeout_s:.0f}s")


def plant_wrong(settings: Settings, keys: list[dict[str, Any]]) -> None:
    """Every entity's title made wrong online, under its stored version (as a lost write would leave it)."""
    sink = open_online_sink(FeatureStore(repo_path=str(settings.feature_repo)))
    try:
        for i in range(0, len(keys), 20_000):
            part = keys[i : i + 20_000]
            stored = sink.stored_orders("repair_rows", part)
            now = datetime.now(UTC)
            sink.add(
                [SinkRow("repair_rows", UPSERT, k, {"title": "wrong"}, now, o[0], "u", "planted", None, o[1])
                 for k, o in zip(part, stored, strict=True) if o is not None]
            )  # fmt: skip
            sink.flush()
    finally:
        sink.close()


def run_shape(shape: str, rows: int) -> dict[str, float]:
    columns, insert, entities, key = SHAPES[shape]
    name = f"repair_{shape}_{uuid.uuid4().hex[:6]}"
    root = Path(tempfile.mkdtemp(prefix="repair-bench-"))
    settings, pg, definition = setup_table(root, name, columns, insert.format(n=rows), entities, key)
    env = {
        "FEATURECTL_FEATURE_REPO": str(settings.feature_repo),
        "FEATURECTL_PROCESSOR_GROUP": settings.processor_group,
        "FEATURECTL_DLQ_TOPIC": settings.dlq_topic,
        "FEATURECTL_SUITES_DIR": str(root / "suites"),
    }
    processor = None
    try:
        deploy(settings, definition, timeout_s=120)
        feast_apply(settings.feature_repo)
        log = open(root / "processor.log", "ab")  # noqa: SIM115 - lives as long as the processor
        processor = subprocess.Popen(
            [sys.executable, "-c", "from featurectl.cli import main; main()", "process", "--file", str(definition.path)],
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
        )  # fmt: skip
        topic = definition.topic_for(f"public.{name}")
        applied = caught_up(settings, topic, rows)
        route = route_for(FeatureStore(repo_path=str(settings.feature_repo)).get_feature_view("repair_rows"))
        assert route is not None
        with psycopg.connect(pg.app_conninfo()) as conn:
            cols = sql.SQL(", ").join(sql.Identifier(c) for _, c in route.keys)
            source = conn.execute(sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(name))).fetchall()
        keys = [{jk: client_key(v) for (jk, _), v in zip(route.keys, r, strict=True)} for r in source]
        plant_wrong(settings, keys)
        args = ("--file", str(definition.path))
        verify_s, found = cli(env, "verify", "repair_rows", *args)
        if f"{rows} rows, {rows} mismatches" not in found.stdout:
            raise SystemExit(
                f"verify did not find the {rows} planted entities:\n{found.stdout[-2000:]}{found.stderr[-2000:]}"
            )
        repair_s, repaired = cli(env, "verify", "repair_rows", "--repair", "--wait", "1800", *args)
        if repaired.returncode != 0 or "after repair: 0 mismatches" not in repaired.stdout:
            raise SystemExit(
                f"verify --repair left mismatches:\n{repaired.stdout[-2000:]}{repaired.stderr[-2000:]}"
            )
        snapshot_s, snap = cli(env, "snapshot", f"public.{name}", "--wait", "1800", *args)
        if snap.returncode != 0:
            raise SystemExit(f"snapshot failed:\n{snap.stdout[-2000:]}{snap.stderr[-2000:]}")
        snapshot_s += caught_up(settings, topic, 2 * rows + rows)  # the repair's and the snapshot's reads too
        return {"applied": applied, "verify": verify_s, "repair": repair_s, "snapshot": snapshot_s}
    finally:
        if processor is not None:
            processor.send_signal(signal.SIGTERM)
            try:
                processor.wait(60)
            except subprocess.TimeoutExpired:
                processor.kill()
        cleanup(settings, pg, definition, name, root)


def setup_table(
    root: Path, name: str, columns: str, insert: str, entities: str, key: str
) -> tuple[Settings, Any, Any]:
    """The table, filled; a repo copy holding only its view; a connector with signals; a suite."""
    settings = load_settings()
    LocalStack(settings).up()
    pg = Postgres(settings)
    with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL(f"CREATE TABLE {{}} ({columns})").format(sql.Identifier(name)))
        conn.execute(sql.SQL(f"INSERT INTO {{}} {insert}").format(sql.Identifier(name)))
    settings, definition = repo_and_connector(settings, pg, root, name, signals=True)
    repo = settings.feature_repo
    for module in ("customers.py", "orders.py", "products.py", "feature_services.py"):
        (repo / module).unlink()
    pairs = [pair.split(":") for pair in entities.split(",")]
    declared = "\n".join(
        f'{k} = Entity(name="{k}", join_keys=["{k}"], value_type=ValueType.{t})' for k, t in pairs
    )
    fields = ", ".join(f'Field(name="{k}", dtype={"Int64" if t == "INT64" else "String"})' for k, t in pairs)
    names = ", ".join(k for k, _ in pairs)  # module-level entities: `feast apply` registers only those
    (repo / "repair.py").write_text(
        VIEW.format(entities=declared, names=names, fields=fields, table=name, key=key)
    )
    suites = root / "suites"
    suites.mkdir()
    (suites / "repair_rows.json").write_text('{"name": "repair_rows", "expectations": []}')
    return settings.model_copy(update={"suites_dir": suites}), pg, definition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows (and planted entities) per shape")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    args = parser.parse_args()
    print(f"command: python -m bench.repair_bench --rows {args.rows} --shapes {args.shapes}")
    print("| key shape | rows | verify | verify --repair (all wrong) | anchor: snapshot of the table |")
    print("|---|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        t = run_shape(shape, args.rows)
        n = args.rows
        print(
            f"| {shape} | {n:,} | {t['verify']:.1f} s ({n / t['verify']:,.0f} rows/s) "
            f"| {t['repair']:.1f} s ({n / t['repair']:,.0f} entities/s) "
            f"| {t['snapshot']:.1f} s ({n / t['snapshot']:,.0f} rows/s) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
