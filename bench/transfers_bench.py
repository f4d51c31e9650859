"""Broken reads: how often a reader of the online store sees half of a source transaction (issue 49).

    .venv/bin/python -m bench.transfers_bench                              # SQLite, 1 processor, 10,000 reads
    .venv/bin/python -m bench.transfers_bench --online-store redis --workers 2
    .venv/bin/python -m bench.transfers_bench --kill                       # SIGKILL the processor a third in
    FEATURECTL_ATOMIC_TRANSACTIONS=false .venv/bin/python -m bench.transfers_bench   # per-row visibility

A table of ``--accounts`` accounts of balance 1,000 each; a writer process moves a random amount between two
random accounts in one Postgres transaction (two UPDATEs) at ``--rate`` transactions/s (``--writers`` processes
share it): the sum of the balances never changes in Postgres. Meanwhile a reader looks up every account's balance (Feast's `get_online_features`,
one request) in a loop and sums them: a sum other than ``accounts * 1000`` is a read that saw one side of a
transfer without the other (a state the source never had). At the end, once the processor has caught up, the
online store must equal Postgres: nothing lost.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from feast import FeatureStore
from psycopg import sql

from bench.common import cleanup, drop_online_store, repo_and_connector, use_online_store
from connectors.deploy import deploy
from core import procs
from core.settings import PROJECT_ROOT, load_settings
from stack.launcher import LocalStack
from stack.postgres import Postgres
from stores.registry import kinds
from stores.repository import feast_apply

BALANCE = 1000
VIEW = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import DeltaFormat
from feast.types import Int64

account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)

account_history = FileSource(
    name="account_history", path="data/offline/account_balance", timestamp_field="event_timestamp",
    created_timestamp_column="ingested_at", file_format=DeltaFormat(),
)

account_balance = FeatureView(
    name="account_balance",
    entities=[account],
    ttl=timedelta(0),
    schema=[Field(name="account_id", dtype=Int64), Field(name="balance", dtype=Int64)],
    source=PushSource(name="account_push", batch_source=account_history),
    online=True,
    tags={{"cdc.table": "public.{table}", "cdc.key": "account_id=id"}},
)
"""


def transfer(
    conninfo: str, table: str, accounts: int, rate: float, stop: Any, done: Any, seed: int = 1
) -> None:
    """Transfers between two random accounts, one Postgres transaction each, ``rate`` per second, until
    ``stop``; ``done`` counts them (runs in a process of its own)."""
    procs.make_normal()
    rng = random.Random(seed)
    update = sql.SQL("UPDATE {} SET balance = balance + %s WHERE id = %s").format(sql.Identifier(table))
    with psycopg.connect(conninfo) as conn:
        next_at = time.monotonic()
        while not stop.is_set():
            a, b = rng.sample(range(1, accounts + 1), 2)
            amount = rng.randint(1, 100)
            with conn.transaction():
                conn.execute(update, (-amount, a))
                conn.execute(update, (amount, b))
            with done.get_lock():
                done.value += 1
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))


def balances(store: FeatureStore, accounts: int) -> list[Any]:
    """Every account's balance, in one lookup."""
    rows = [{"account_id": i} for i in range(1, accounts + 1)]
    return list(
        store.get_online_features(features=["account_balance:balance"], entity_rows=rows).to_dict()["balance"]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--rate", type=float, default=300, help="source transactions/s")
    ap.add_argument("--reads", type=int, default=10_000, help="reads of every balance, at least")
    ap.add_argument(
        "--seconds", type=float, default=30, help="how long the transfers and reads run, at least"
    )
    ap.add_argument("--writers", type=int, default=2, help="processes sharing the transfer rate")
    ap.add_argument(
        "--kill", action="store_true", help="SIGKILL the processor a third of the way in, restart it"
    )
    ap.add_argument("--workers", type=int, default=1, help="featurectl process --workers")
    ap.add_argument("--online-store", default="sqlite", choices=[k.name for k in kinds()])
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup still runs
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="featurectl-transfers-"))
    name = f"accounts_{uuid.uuid4().hex[:6]}"
    settings = load_settings()
    LocalStack(settings).up()
    pg = Postgres(settings)
    with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, balance bigint NOT NULL)").format(
                sql.Identifier(name)
            )
        )
        conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT i, %s FROM generate_series(1, %s) i").format(sql.Identifier(name)),
            (BALANCE, args.accounts),
        )
    settings, definition = repo_and_connector(settings, pg, root, name)
    processor: subprocess.Popen[bytes] | None = None
    writers: list[Any] = []
    stop: Any = None
    try:
        repo = settings.feature_repo
        use_online_store(settings, args.online_store, name)  # before the shop's views go: it edits them
        for module in ("customers.py", "orders.py", "products.py", "feature_services.py"):
            (repo / module).unlink()
        (repo / "accounts.py").write_text(VIEW.format(table=name))
        suites = root / "suites"
        suites.mkdir()
        (suites / "account_balance.json").write_text('{"name": "account_balance", "expectations": []}')
        deploy(settings, definition)
        feast_apply(repo)
        env = {
            **os.environ,
            "FEATURECTL_FEATURE_REPO": str(repo),
            "FEATURECTL_SUITES_DIR": str(suites),
            "FEATURECTL_PROCESSOR_GROUP": settings.processor_group,
            "FEATURECTL_DLQ_TOPIC": settings.dlq_topic,
        }
        log = open(root / "processor.log", "ab")  # noqa: SIM115 - lives as long as the processors

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-c", "from featurectl.cli import main; main()", "process", "--file",
                 str(definition.path), "--workers", str(args.workers)],
                env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

        processor = start()
        store = FeatureStore(repo_path=str(repo))
        total = BALANCE * args.accounts
        deadline = time.monotonic() + 300
        while None in (seen := balances(store, args.accounts)) or sum(seen) != total:
            if time.monotonic() > deadline or processor.poll() is not None:
                raise SystemExit(f"the snapshot did not reach the online store; see {root / 'processor.log'}")
            time.sleep(0.2)

        spawn = multiprocessing.get_context("spawn")
        stop, done = spawn.Event(), spawn.Value("q", 0)
        writers = [
            spawn.Process(
                target=transfer,
                args=(pg.app_conninfo(), name, args.accounts, args.rate / args.writers, stop, done, seed),
                name=f"transfers-{seed}",
            )
            for seed in range(args.writers)
        ]
        for writer in writers:
            writer.start()
        while done.value == 0:
            if not all(w.is_alive() for w in writers):
                raise SystemExit("a transfer writer died before its first transfer")
            time.sleep(0.05)
        reads = broken = 0
        worst = 0
        began, first = time.monotonic(), done.value
        while reads < args.reads or time.monotonic() < began + args.seconds:
            if args.kill and reads == args.reads // 3:
                processor.kill()  # mid-stream: held rows, uncommitted offsets
                processor.wait(30)
                processor = start()
            off = sum(v or 0 for v in balances(store, args.accounts)) - total
            reads += 1
            if off:
                broken += 1
                worst = max(worst, abs(off))
        elapsed, transactions = time.monotonic() - began, done.value - first
        stop.set()
        for writer in writers:
            writer.join(30)

        with psycopg.connect(pg.app_conninfo()) as conn:
            want = [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT balance FROM {} ORDER BY id").format(sql.Identifier(name))
                )
            ]
        deadline = time.monotonic() + 120
        while (got := balances(store, args.accounts)) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        mismatched = sum(1 for g, w in zip(got, want, strict=True) if g != w)

        print("\n== broken reads: transfers between accounts, the online store read whole ==")
        print(
            f"command: .venv/bin/python -m bench.transfers_bench --accounts {args.accounts} --rate {args.rate:g} "
            f"--reads {args.reads} --seconds {args.seconds:g} --writers {args.writers} --workers {args.workers} "
            f"--online-store {args.online_store}{' --kill' if args.kill else ''}"
            f"  (FEATURECTL_ATOMIC_TRANSACTIONS={os.environ.get('FEATURECTL_ATOMIC_TRANSACTIONS', 'true')})"
        )
        print(
            f"  {transactions:,} transfers ({transactions / elapsed:,.0f}/s); {reads:,} reads of all "
            f"{args.accounts} balances: {broken:,} broken ({broken / max(reads, 1):.1%}), off by up to {worst:,}"
        )
        print(f"  after catching up: {mismatched} of {args.accounts} accounts differ from Postgres")
    finally:
        if stop is not None:
            stop.set()
        for writer in writers:
            if writer.is_alive():
                writer.terminate()
        if processor is not None and processor.poll() is None:
            processor.send_signal(signal.SIGTERM)
            try:
                processor.wait(60)
            except subprocess.TimeoutExpired:
                processor.kill()
        drop_online_store(settings, args.online_store, name)
        cleanup(settings, pg, definition, name, root)


if __name__ == "__main__":
    main()
