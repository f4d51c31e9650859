"""Stream processor benchmark: end-to-end throughput and commit-to-online freshness, against Feast's
own ``store.push`` into the same online store, measured in the same run.

    .venv/bin/python bench/processor_bench.py [--rows 20000] [--rate 200] [--seconds 30] [--online-store sqlite]

Needs the local stack (``featurectl stack up``; the script starts it if needed). It works on a
table of its own (shaped like ``customers``), a copy of the feature repository pointed at it, and its
own connector, topics and consumer group, so it leaves the project's tables, topics and stores alone; it
drops its table, connector and topics when it ends (bench/common.py cleanup). Figures vary between runs on
shared machines: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from feast import FeatureStore
from feast.data_source import PushMode
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    cleanup,
    drop_online_store,
    handled,
    setup,
    use_online_store,
    use_parquet_history,
    wait_processed,
    wait_visible,
)
from bench.cpu import CpuShares
from connectors.definition import ConnectorDefinition
from connectors.deploy import deploy
from core import metrics
from core.settings import Settings
from stores.registry import kinds
from stores.repository import feast_apply
from stores.sqlite.db import connect
from streams.processor import Processor, ProcessorConfig
from streams.workers import Workers


def seed(conninfo: str, table: str, rows: int, txn_rows: int = 0) -> list[int]:
    """Insert ``rows`` customers: in one transaction, or in transactions of ``txn_rows`` rows each."""
    step = txn_rows if txn_rows > 0 else rows
    tag = uuid.uuid4().hex[:6]
    ids: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:  # each INSERT its own transaction
        for start in range(0, rows, step):
            ids += [
                r[0]
                for r in conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (email, full_name, country, segment, credit_limit) "
                        "SELECT 'b' || g || '-' || %s || '@bench', 'Bench', 'GB', 'standard', 1 "
                        "FROM generate_series(%s::bigint, %s::bigint) g RETURNING id"
                    ).format(sql.Identifier(table)),
                    (tag, start + 1, min(start + step, rows)),
                ).fetchall()
            ]
    return ids


# A new topic's partitions before their leader is elected: the watermark is asked again.
NOT_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
)


def wait_in_kafka(bootstrap: str, topic: str, count: int, timeout: float = 600) -> float:
    """Wait until ``topic`` holds ``count`` messages (the sum of its partitions' high watermarks; the topic
    is the bench table's own, so every message is one of its changes); the seconds it took. A catch-up
    started before Debezium has written the backlog measures the capture instead (2026-11-26: 0.46 cores in
    Connect during a "catch-up" of 100,000 rows, 3.8k rows/s)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-backlog-{uuid.uuid4().hex[:6]}"})
    start = time.monotonic()
    try:
        while True:
            held = 0
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is not None and meta.error is None:
                try:
                    for partition in meta.partitions:
                        held += consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[
                            1
                        ]
                except KafkaException as exc:
                    # A topic Debezium has just created may have no leader yet (NOT_LEADER_FOR_PARTITION, seen in
                    # CI): asked again at the next poll, until the deadline.
                    if exc.args[0].code() not in NOT_YET:
                        raise
                    held = 0
            if held >= count:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise SystemExit(f"{topic} holds {held} of the {count} seeded changes after {timeout:.0f}s")
            time.sleep(0.5)
    finally:
        consumer.close()


class KafkaCeiling(threading.Thread):
    """A bare confluent-kafka consumer of the table's topic that only decodes each message's JSON:
    how fast changes reach Kafka and can be read, with nothing of the processor's work."""

    def __init__(self, bootstrap: str, topic: str, target: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-ceiling-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
            }
        )
        self.topic, self.target, self.seen = topic, target, 0
        self.assigned, self.done = threading.Event(), threading.Event()
        self.finished_at = 0.0

    def run(self) -> None:
        def at_end(consumer: Consumer, parts: list[TopicPartition]) -> None:
            for tp in parts:  # start at the end as of now: only the changes made from here on count
                tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
            consumer.assign(parts)
            self.assigned.set()

        self.consumer.subscribe([self.topic], on_assign=at_end)
        try:
            while self.seen < self.target:
                for msg in self.consumer.consume(1000, 0.2):
                    if msg.error() is None and msg.value():
                        json.loads(msg.value())  # type: ignore[arg-type]
                        self.seen += 1
            self.finished_at = time.monotonic()
        finally:
            self.consumer.close()
            self.done.set()


def sqlite_floor(path: Path, entities: int, features: int) -> float:
    """Rows/s of the online store's SQL work alone, with nothing of Python's: per entity, one upsert
    per feature into a table of Feast's SQLite layout and one into the versions table, pre-built values,
    1000 entities per transaction, on scratch tables in the same database file. What the processor's
    online write can never beat on this machine."""
    conn = connect(path)
    tag = uuid.uuid4().hex[:6]
    feats, vers = f"bench_floor_{tag}", f"bench_floor_versions_{tag}"
    conn.execute(
        f"CREATE TABLE {feats} (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, "
        "event_ts timestamp, created_ts timestamp, PRIMARY KEY (entity_key, feature_name))"
    )
    conn.execute(
        f"CREATE TABLE {vers} (view TEXT NOT NULL, entity_key BLOB NOT NULL, version INTEGER, "
        "version_minor INTEGER, event_us INTEGER, deleted INTEGER, join_keys TEXT, PRIMARY KEY (view, entity_key))"
    )
    conn.commit()
    keys = [random.randbytes(8) + b"customer_id" + random.randbytes(8) for _ in range(entities)]
    names = [f"feature_{i}" for i in range(features)]
    elapsed = 0.0
    try:
        for rnd in range(2):  # the first round inserts, the second updates (what a catch-up does)
            start = time.perf_counter()
            for i in range(0, entities, 1000):
                chunk = keys[i : i + 1000]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    f"INSERT INTO {feats} VALUES (?, ?, ?, NULL, ?, ?) ON CONFLICT (entity_key, feature_name) "
                    "DO UPDATE SET value = excluded.value, value_text = excluded.value_text, "
                    "event_ts = excluded.event_ts, created_ts = excluded.created_ts",
                    [(k, f, b"\x12\x02GB", rnd, rnd) for k in chunk for f in names],
                )
                conn.executemany(
                    f"INSERT INTO {vers} VALUES ('v', ?, ?, 0, ?, 0, '{{}}') ON CONFLICT (view, entity_key) "
                    "DO UPDATE SET version = excluded.version, event_us = excluded.event_us",
                    [(k, rnd, rnd) for k in chunk],
                )
                conn.commit()
            elapsed = time.perf_counter() - start
    finally:
        conn.execute(f"DROP TABLE {feats}")
        conn.execute(f"DROP TABLE {vers}")
        conn.commit()
        conn.close()
    return entities / elapsed


STAGES = ("transform", "validate", "embed", "online_write", "offline_write", "dead_letter_write", "commit")


def stage_seconds() -> dict[str, float]:
    """Seconds the processor has spent in each stage so far (its featurectl_stage_duration_seconds sums)."""
    return {stage: metrics.STAGE_DURATION.labels(stage)._sum.get() for stage in STAGES}


def bulk_updates(conninfo: str, table: str, ids: list[int], rounds: int) -> int:
    """``rounds`` passes over ``ids``, 200 rows per transaction; returns rows changed."""
    changed = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for r in range(rounds):
            for i in range(0, len(ids), 200):
                chunk = ids[i : i + 200]
                conn.execute(
                    sql.SQL("UPDATE {} SET credit_limit = %s WHERE id = ANY(%s)").format(
                        sql.Identifier(table)
                    ),
                    (r + 2, chunk),
                )
                changed += len(chunk)
    return changed


# The workers' counters are shared memory made in the workers' own (spawn) context.
_SPAWN = multiprocessing.get_context("spawn")


class WorkerTally:
    """Rows ``--workers`` processes have handled (written to the stores or dead-lettered), summed; read
    like a Processor by ``handled`` and ``wait_processed``. Reading it once the workers are gone exits."""

    def __init__(self, rows: list[Any], running: Callable[[], bool]) -> None:
        self.rows, self.running = rows, running
        self.dead_lettered = 0  # counted in rows

    @property
    def processed(self) -> int:
        if not self.running():
            raise SystemExit("the workers exited before the run's end (their log is above)")
        return sum(int(v.value) for v in self.rows)


def _worker(
    settings: Settings,
    topic_prefix: str,
    rows: list[Any],
    index: int,
    ready: Callable[[], None],
    stop: threading.Event,
) -> None:
    """One ``--workers`` process (as ``featurectl process --workers N`` runs it, without the metrics
    server), publishing how many rows it has handled in ``rows[index]``."""
    logging.basicConfig(level=logging.WARNING)
    store = FeatureStore(repo_path=str(settings.feature_repo))

    class Publishing(Processor):
        # After each batch, in the processor's own thread: a polling thread would wake 100 times a
        # second and take the GIL from the batch it measures.
        def _handle(self, consumer: Any, messages: Any) -> None:
            super()._handle(consumer, messages)
            rows[index].value = handled(self)

    Publishing(settings, store, ProcessorConfig.from_settings(settings, topic_prefix)).run(stop, ready)


def end_to_end(
    settings: Settings,
    definition: ConnectorDefinition,
    app: str,
    table: str,
    ids: list[int],
    counted: Any,
    store: FeatureStore,
) -> tuple[float, float, float, float]:
    """Sustained end to end: bulk updates of ``ids`` in Postgres until ``counted`` (a processor, or the
    workers' tally) has applied them all and ``store`` holds none out of sight. In the same run: how fast
    Postgres commits them, and how fast they can be read from Kafka at all (a bare consumer that only decodes
    JSON: the ceiling Debezium and Kafka set).

    Returns rows/s of (end to end, Postgres commits, the ceiling) and the end to end's seconds."""
    ceiling = KafkaCeiling(settings.bootstrap_servers, definition.topic_for(f"public.{table}"), 2 * len(ids))
    ceiling.start()
    ceiling.assigned.wait(30)
    before = handled(counted)
    t1 = time.monotonic()
    changed = bulk_updates(app, table, ids, rounds=2)
    commit_rate = changed / (time.monotonic() - t1)
    wait_processed(counted, before + changed)
    wait_visible(store)
    e2e_total = time.monotonic() - t1
    ceiling.done.wait(300)
    kafka_rate = ceiling.seen / (ceiling.finished_at - t1) if ceiling.finished_at else float("nan")
    return changed / e2e_total, commit_rate, kafka_rate, e2e_total


def worker_run(
    settings: Settings,
    definition: ConnectorDefinition,
    table: str,
    count: int,
    app: str,
    ids: list[int],
    cpu: CpuShares,
    store: FeatureStore,
) -> tuple[float, float, float, float, float, float, float]:
    """Catch-up and end to end with ``count`` worker processes sharing the group, measured as the
    single-process run measures its processor; ``cpu`` measures the catch-up.

    Returns rows/s of (catch-up, end to end, Postgres commits, the ceiling), and seconds of (start-up,
    catch-up, end to end)."""
    rows = [_SPAWN.Value("q", 0, lock=False) for _ in range(count)]
    workers = Workers(partial(_worker, settings, definition.topic_prefix, rows), count)
    supervisor = threading.Thread(target=workers.wait, daemon=True)
    tally = WorkerTally(rows, supervisor.is_alive)
    try:
        workers.start()
        supervisor.start()
        # 1. Catch-up: they load, join the group together (streams/workers.py), then share the backlog.
        startup = wait_processed(tally, 1)
        first = handled(tally)
        cpu.start()
        catch_up = wait_processed(tally, len(ids))
        catch_up += wait_visible(store)  # a row is counted when read; held ones are visible at their release
        cpu.stop()
        catchup_rate = (handled(tally) - first) / catch_up

        # 2. End to end, the ceiling beside it, as in the single-process run.
        e2e_rate, commit_rate, kafka_rate, e2e_total = end_to_end(
            settings, definition, app, table, ids, tally, store
        )
        return catchup_rate, e2e_rate, commit_rate, kafka_rate, startup, catch_up, e2e_total
    finally:
        workers.stop()  # spawned workers are not daemons: the bench would wait for them at exit
        if supervisor.is_alive():
            supervisor.join(120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000, help="customers changed per throughput round")
    ap.add_argument(
        "--seed-txn-rows",
        type=int,
        default=0,
        help="rows per source transaction of the catch-up's backlog (0: all of it in one transaction)",
    )
    ap.add_argument("--rate", type=int, default=200, help="changes per second in the freshness run")
    ap.add_argument("--seconds", type=int, default=30, help="length of the freshness run")
    ap.add_argument(
        "--offline-format",
        choices=["delta", "parquet"],
        default="delta",
        help="history layout: Delta tables (feature_repo's) or Parquet directories (the old one)",
    )
    ap.add_argument(
        "--online-store",
        choices=[k.name for k in kinds()],
        default="sqlite",
        help="the online store both the processor and the Feast push anchor write",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processor processes sharing the group for the catch-up and end-to-end runs "
        "(featurectl process --workers N); the freshness run uses one",
    )
    args = ap.parse_args()
    # SIGTERM (a job runner stopping us) must still run the cleanup below: connector, slot, table.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="featurectl-bench-"))
    name = f"bench_{uuid.uuid4().hex[:6]}"
    settings, pg, definition = setup(
        root, name, "customers", "customers.py", '"cdc.table": "public.customers"'
    )
    if args.offline_format == "parquet":
        use_parquet_history(settings.feature_repo)
    use_online_store(settings, args.online_store, name)
    app = pg.app_conninfo()
    try:
        deploy(settings, definition)
        feast_apply(settings.feature_repo)
        store = FeatureStore(repo_path=str(settings.feature_repo))
        ids = seed(app, name, args.rows, args.seed_txn_rows)
        # The catch-up drains a backlog: every seeded change in Kafka before a processor starts.
        captured = wait_in_kafka(settings.bootstrap_servers, definition.topic_for(f"public.{name}"), len(ids))

        stages: dict[str, float] = {}
        existing, changed = len(ids), 2 * len(ids)  # the seeded rows; end_to_end's two passes over them
        # Where the cores go during the catch-up: the processor (its threads in this process with one
        # worker, its worker processes with more), the online store's server, Kafka.
        cpu = CpuShares(children="processor workers", own="processor (this process)")
        if args.workers > 1:
            # 1-2. Catch-up and end to end with N processes (their stage timers live in each process).
            catchup_rate, e2e_rate, commit_rate, kafka_rate, startup, catch_up, e2e_total = worker_run(
                settings, definition, name, args.workers, app, ids, cpu, store
            )
        processor = Processor(
            settings, store, ProcessorConfig.from_settings(settings, definition.topic_prefix)
        )
        stop = threading.Event()
        worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
        worker.start()
        if args.workers == 1:
            # 1. Catch-up: changes already in Kafka (the seeded rows).
            startup = wait_processed(processor, 1)  # group join, assignment, model load: not throughput
            first, stages_before = handled(processor), stage_seconds()
            cpu.start()
            catch_up = wait_processed(processor, existing)
            # A row is counted when read; a held one is visible at its transaction's release.
            catch_up += wait_visible(store)
            cpu.stop()
            stages = {k: v - stages_before[k] for k, v in stage_seconds().items()}
            catchup_rate = (handled(processor) - first) / catch_up

            # 2. Sustained end to end, the ceiling beside it.
            e2e_rate, commit_rate, kafka_rate, e2e_total = end_to_end(
                settings, definition, app, name, ids, processor, store
            )
        elif not processor.assigned.wait(300):  # it starts at the group's offsets, where the workers left
            raise SystemExit("the freshness run's processor got no partitions in 300s")

        # 3. Freshness at a steady moderate rate: single-row commits, paced.
        processor.pipeline.freshness.samples.clear()
        processor.pipeline.batch_freshness.samples.clear()
        before = handled(processor)
        with psycopg.connect(app, autocommit=True) as conn:
            start = time.monotonic()
            n = 0
            while (now := time.monotonic()) < start + args.seconds:
                due = start + n / args.rate  # a fixed schedule: a slow commit does not lower the rate
                if now < due:
                    time.sleep(due - now)
                conn.execute(
                    sql.SQL("UPDATE {} SET credit_limit = credit_limit + 1 WHERE id = %s").format(
                        sql.Identifier(name)
                    ),
                    (ids[n % len(ids)],),
                )
                n += 1
        wait_processed(processor, before + n)
        fresh = processor.pipeline.freshness
        p50, p99 = fresh.percentile(50), fresh.percentile(99)
        end = processor.pipeline.batch_freshness
        end50, end99 = end.percentile(50), end.percentile(99)
        stop.set()
        worker.join(30)

        # Anchor: Feast's own push into the same online store, same rows, same feature view.
        df = pd.DataFrame(
            {
                "customer_id": ids,
                "email": [f"{i:064x}" for i in ids],  # as the processor stores it: a keyed hash (pii.email)
                "country": "GB",
                "segment": "gold",
                "credit_limit": 5.0,
                "birth_date": datetime(1990, 1, 1, tzinfo=UTC),
                "event_timestamp": datetime.now(UTC),
                "ingested_at": datetime.now(UTC),
            }
        )
        t2 = time.monotonic()
        for i in range(0, len(df), 1000):
            store.push("customer_profile_push", df.iloc[i : i + 1000], to=PushMode.ONLINE)
        push_rate = len(df) / (time.monotonic() - t2)

        view = store.get_feature_view("customer_profile")
        floor_rate = float("nan")
        if args.online_store == "sqlite":
            online_path = Path(str(store.config.repo_path)) / str(store.config.online_store.path)
            floor_rate = sqlite_floor(online_path, len(ids), len(view.features))

        print("\n== stream processor benchmark ==")
        print(
            f"command: .venv/bin/python bench/processor_bench.py --rows {args.rows} --rate {args.rate} "
            f"--seconds {args.seconds} --offline-format {args.offline_format} --online-store {args.online_store} "
            f"--workers {args.workers} --seed-txn-rows {args.seed_txn_rows}"
        )
        print(
            f"catch-up from Kafka: {existing} rows in {catch_up:.1f}s after the first = {catchup_rate:,.0f} "
            f"rows/s (decode + validation + online + offline + commit) with {args.workers} processor "
            f"process(es); start-up {startup:.1f}s; the backlog was in Kafka {captured:.1f}s after the seed"
        )
        print(f"CPU during the catch-up ({cpu})")
        print(
            f"end to end (Postgres commit -> online), bulk updates: {changed} rows in {e2e_total:.1f}s "
            f"= {e2e_rate:,.0f} rows/s"
        )
        print(
            f"freshness at {args.rate} changes/s for {args.seconds}s ({n} changes): commit-to-online "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms at the online commit; p50 {end50:.0f} ms, p99 {end99:.0f} ms "
            "once the batch's history is written too"
        )
        print(
            f"anchor: Feast store.push(to=ONLINE) into the same {args.online_store} store, 1000-row pushes: "
            f"{push_rate:,.0f} rows/s"
        )
        print(f"processor end-to-end / Feast push: {e2e_rate / push_rate:.2f}x")
        print("\n| stage | rows/s | ratio |")
        print("|---|---:|---|")
        print(f"| Postgres commits (200-row transactions) | {commit_rate:,.0f} | |")
        print(
            f"| Debezium -> Kafka -> bare consumer (JSON decode only): the ceiling | {kafka_rate:,.0f} | 1.00 |"
        )
        print(
            f"| processor end to end (commit -> online) | {e2e_rate:,.0f} | {e2e_rate / kafka_rate:.2f} of the ceiling |"
        )
        print(
            f"| processor catch-up from Kafka | {catchup_rate:,.0f} | {catchup_rate / push_rate:.2f}x Feast push |"
        )
        print(f"| Feast store.push(ONLINE), 1000-row pushes: the anchor | {push_rate:,.0f} | 1.00 |")
        if args.online_store == "sqlite":
            print(
                f"| the online store's SQL alone ({len(view.features)} feature rows + 1 version row per entity): "
                f"the SQLite floor | {floor_rate:,.0f} | {floor_rate / push_rate:.2f}x Feast push |"
            )
        print(
            f"| freshness at {args.rate}/s, commit -> online p50 / p99 | {p50:.0f} / {p99:.0f} ms | "
            f"batch end {end50:.0f} / {end99:.0f} ms |"
        )
        if not stages:
            print("\n(the stage timers live in each worker process: --workers 1 prints where the time goes)")
            return
        busy = sum(stages.values())
        print(
            f"\nwhere the catch-up's {catch_up:.1f}s went (the processor's stage timers; the rest is polling):"
        )
        print("| stage | seconds | share | µs per row |")
        print("|---|---:|---:|---:|")
        for stage, took in stages.items():
            print(f"| {stage} | {took:.2f} | {took / catch_up:.0%} | {1e6 * took / existing:.0f} |")
        print(
            f"| (outside the stages: consume, claims, bookkeeping) | {catch_up - busy:.2f} | "
            f"{(catch_up - busy) / catch_up:.0%} | {1e6 * (catch_up - busy) / existing:.0f} |"
        )
    finally:
        try:
            drop_online_store(settings, args.online_store, name)
        finally:
            cleanup(settings, pg, definition, name, root)


if __name__ == "__main__":
    main()
