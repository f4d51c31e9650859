"""Serving and backfill benchmark: online lookup latency over HTTP (`feast serve`) and in-process, for 1
and 100 entities, with the stream processor idle and writing at full speed; backfill rows per second.

    .venv/bin/python bench/serving_bench.py [--rows 5000] [--requests 300]

Needs the local stack (started if needed); works on a table of its own (shaped like ``customers``)
with its own connector, group and feature repo copy. The processor runs as its own process, as it
would next to a model service. Compare figures within one run: absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import psycopg
import requests
from feast import FeatureStore
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, drop_online_store, setup, use_online_store
from bench.cpu import CpuShares
from connectors.deploy import deploy
from core import procs
from core.settings import PROJECT_ROOT
from jobs.pg_backfill import PostgresBackfill
from serving.feature_server import FeatureServer
from stores.registry import kinds
from stores.repository import feast_apply
from streams.dlq import DeadLetterSink
from validation.suites import SuiteStore
from validation.validator import BatchValidator

FEATURES = ["customer_profile:segment", "customer_profile:credit_limit", "customer_profile:country"]
WARMUP = 5  # lookups per case before the measured ones


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"


def write_changes(conninfo: str, table: str, ids: list[int], changes: Any, stop: Any) -> None:
    """Bulk updates, 200 rows per transaction, as fast as Postgres takes them, until ``stop`` is set;
    ``changes`` counts the rows changed (runs in a process of its own)."""
    procs.make_normal()  # the application's writes are not latency-critical (the client is real-time)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        r = 2
        while not stop.is_set():
            for i in range(0, len(ids), 200):
                if stop.is_set():
                    break
                conn.execute(
                    sql.SQL("UPDATE {} SET credit_limit = %s WHERE id = ANY(%s)").format(
                        sql.Identifier(table)
                    ),
                    (r, ids[i : i + 200]),
                )
                with changes.get_lock():
                    changes.value += len(ids[i : i + 200])
            r += 1


def measure(url: str, store: FeatureStore, ids: list[int], requests_n: int) -> dict[str, str]:
    session = requests.Session()
    out = {}
    for size in (1, 100):
        # Warm-up, not recorded: the connection, and each server's and client's first lookup of the view
        # (registry load, prepared statements) belong to start-up, not to a lookup's latency.
        for _ in range(WARMUP):
            session.post(
                f"{url}/get-online-features",
                json={"features": FEATURES, "entities": {"customer_id": ids[:size]}},
                timeout=30,
            )
            store.get_online_features(features=FEATURES, entity_rows=[{"customer_id": c} for c in ids[:size]])
        http, local = [], []
        failed: list[str] = []
        for i in range(requests_n):
            batch = [ids[(i * size + j) % len(ids)] for j in range(size)]
            t0 = time.perf_counter()
            try:
                r = session.post(
                    f"{url}/get-online-features",
                    json={"features": FEATURES, "entities": {"customer_id": batch}},
                    timeout=10,
                )
                r.raise_for_status()
            except requests.RequestException as exc:  # a figure of the run, not the end of it
                failed.append(type(exc).__name__)
                continue
            t1 = time.perf_counter()
            store.get_online_features(
                features=FEATURES, entity_rows=[{"customer_id": c} for c in batch]
            ).to_dict()
            t2 = time.perf_counter()
            http.append((t1 - t0) * 1000)
            local.append((t2 - t1) * 1000)
        errors = f", {len(failed)} failed ({', '.join(sorted(set(failed)))})" if failed else ""
        out[f"HTTP, {size} entit{'y' if size == 1 else 'ies'}"] = (
            pct(http) if http else "no answer"
        ) + errors
        out[f"in-process, {size} entit{'y' if size == 1 else 'ies'}"] = pct(local)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000, help="customers in the bench table")
    ap.add_argument("--requests", type=int, default=300, help="lookups per case")
    ap.add_argument("--online-store", default="sqlite", choices=[k.name for k in kinds()])
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup still runs
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="featurectl-servebench-"))
    name = f"bench_{uuid.uuid4().hex[:6]}"
    settings, pg, definition = setup(
        root, name, "customers", "customers.py", '"cdc.table": "public.customers"'
    )
    processor: subprocess.Popen[bytes] | None = None
    server: FeatureServer | None = None
    writer: BaseProcess | None = None
    stop: Any = None
    try:
        use_online_store(settings, args.online_store, name)
        deploy(settings, definition)
        feast_apply(settings.feature_repo)
        with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (email, full_name, country, segment, credit_limit) "
                        "SELECT 's' || g || '@bench', 'S', 'GB', 'standard', 1 FROM generate_series(1, %s) g RETURNING id"
                    ).format(sql.Identifier(name)),
                    (args.rows,),
                ).fetchall()
            ]
        env = {
            **os.environ,
            "FEATURECTL_FEATURE_REPO": str(settings.feature_repo),
            "FEATURECTL_PROCESSOR_GROUP": settings.processor_group,
            "FEATURECTL_DLQ_TOPIC": settings.dlq_topic,
        }
        processor = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from featurectl.cli import main; main()",
                "process",
                "--file",
                str(definition.path),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        store = FeatureStore(repo_path=str(settings.feature_repo))
        deadline = time.monotonic() + 300
        while store.get_online_features(
            features=FEATURES[:1], entity_rows=[{"customer_id": ids[-1]}]
        ).to_dict()["segment"] != ["standard"]:
            if time.monotonic() > deadline:
                raise SystemExit("the processor did not catch up with the seeded rows in 300 s")
            time.sleep(0.2)
        prio = settings.serving_rt_priority
        server = FeatureServer(
            settings.feature_repo, "127.0.0.1", free_port(), log=root / "serve.log", rt_priority=prio
        )
        server.start()
        # This client is the model service: on a host shared with ingest it runs as `featurectl serve`
        # does (docs/performance.md, lookups under ingest), or its own waits for a core land in the
        # figures, the in-process ones above all.
        scheduling = (
            f"feast serve{', the local Redis' if args.online_store == 'redis' else ''} and this client "
            f"SCHED_RR at priority {prio}"
            if prio and procs.make_realtime(prio) and procs.is_realtime(server.proc.pid)  # type: ignore[union-attr]
            else "normal scheduling (FEATURECTL_SERVING_RT_PRIORITY=0 or not privileged)"
        )
        idle = measure(server.url, store, ids, args.requests)

        # The writer is a process of its own, as the application writing to Postgres would be: as a thread
        # of this client it shared the client's GIL, and its share landed in the measured lookups' latency.
        spawn = multiprocessing.get_context("spawn")
        changes, stop = spawn.Value("q", 0), spawn.Event()
        writer = spawn.Process(
            target=write_changes, args=(pg.app_conninfo(), name, ids, changes, stop), name="bench-writer"
        )
        writer.start()
        # Measure only once the processor is applying the writer's changes.
        while store.get_online_features(
            features=FEATURES[1:2], entity_rows=[{"customer_id": ids[0]}]
        ).to_dict()["credit_limit"] == [1.0]:
            time.sleep(0.1)
        cpu = CpuShares(children="Postgres writer (bench)")
        busy_start, changed_before = time.monotonic(), changes.value
        cpu.start()
        busy = measure(server.url, store, ids, args.requests)
        busy_s = time.monotonic() - busy_start
        rate = (changes.value - changed_before) / busy_s
        cpu.stop()
        stop.set()
        writer.join(30)
        procs.make_normal()  # the backfill below is throughput work

        validator = BatchValidator(SuiteStore(settings.suites_dir))
        dlq = DeadLetterSink(settings.kafka_client(), settings.dlq_topic)
        runs = []
        for _ in range(2):
            job = PostgresBackfill(
                store, pg.app_conninfo(), "customer_profile", root / "jobs", validator, dlq, chunk=5000
            )
            t = time.monotonic()
            report = job.run(restart=True)
            runs.append((report, time.monotonic() - t))

        print("\n== serving and backfill benchmark ==")
        print(
            f"command: .venv/bin/python bench/serving_bench.py --rows {args.rows} --requests {args.requests} "
            f"--online-store {args.online_store}"
        )
        print(
            f"lookups of {len(FEATURES)} features, {args.requests} requests per case after {WARMUP} not measured, "
            f"{args.online_store} online store"
        )
        print(f"  scheduling: {scheduling}")
        for case in idle:
            print(f"  {case:<24} idle: {idle[case]:<28} processor writing: {busy[case]}")
        print(
            f"  (while measuring 'processor writing', Postgres committed {rate:,.0f} row changes/s into the stream)"
        )
        print(f"  CPU while measuring 'processor writing' ({cpu})")
        print(
            "  anchor (ARCHITECTURE.md, same kind of machine): feast serve p50 2.5 ms, p99 4.8 ms for 1 entity x 9 features"
        )
        (first, t1), (second, t2) = runs
        print(
            f"backfill {first.table} -> offline: {first.read} rows in {t1:.1f}s = {first.read / t1:,.0f} rows/s "
            f"({first.written} written); re-run over the unchanged table: {second.read / t2:,.0f} rows/s "
            f"({second.written} written)"
        )
    finally:
        if writer is not None:
            stop.set()
            writer.join(30)
            if writer.is_alive():
                writer.kill()
        if server:
            server.stop()
        if processor and processor.poll() is None:
            processor.terminate()
            processor.wait(30)
        drop_online_store(settings, args.online_store, name)
        cleanup(settings, pg, definition, name, root)


if __name__ == "__main__":
    main()
