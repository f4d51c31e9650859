"""A very large source transaction through the processor (issue 49): memory stays bounded, the rows all arrive.

    .venv/bin/python -m bench.large_txn_bench                       # 1,000,000 rows, SQLite
    .venv/bin/python -m bench.large_txn_bench --rows 200000 --online-store postgres

A table of ``--rows`` accounts (captured from the stream on, no snapshot), then ONE Postgres transaction updating
every row. The online store holds a transaction's rows out of sight until all of it is written, up to
FEATURECTL_TXN_MAX_ROWS (docs/processor.md, Transactions); past it the transaction is made visible as it comes,
logged and counted. Prints the processor's peak resident memory (VmHWM, summed over its processes), how long
until a sample of the rows shows the update, and what `featurectl health` reports of transactions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from feast import FeatureStore
from psycopg import sql

from bench.common import cleanup, drop_online_store, repo_and_connector, use_online_store
from bench.transfers_bench import BALANCE, VIEW
from connectors.definition import ConnectorDefinition
from connectors.deploy import deploy
from core.settings import PROJECT_ROOT, load_settings
from stack.launcher import LocalStack
from stack.postgres import Postgres
from stores.registry import kinds, transaction_state
from stores.repository import feast_apply


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid`` and its children, in MiB (0 for a process gone)."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def sample(store: FeatureStore, ids: list[int]) -> list[int | None]:
    got = store.get_online_features(
        features=["account_balance:balance"], entity_rows=[{"account_id": i} for i in ids]
    ).to_dict()
    return list(got["balance"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--online-store", default="sqlite", choices=[k.name for k in kinds()])
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="featurectl-largetxn-"))
    name = f"large_{uuid.uuid4().hex[:6]}"
    settings = load_settings()
    LocalStack(settings).up()
    pg = Postgres(settings)
    with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
        table = sql.Identifier(name)
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, balance bigint NOT NULL)").format(table))
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT i, %s FROM generate_series(1, %s) i").format(table),
            (BALANCE, args.rows),
        )
    settings, definition = repo_and_connector(settings, pg, root, name)
    # From the stream on: the transaction under test is the only thing the processor reads.
    config = {**definition.config, "snapshot.mode": "no_data"}
    definition.path.write_text(json.dumps({"name": definition.name, "config": config}, indent=2))
    definition = ConnectorDefinition(name=definition.name, config=config, path=definition.path)
    processor: subprocess.Popen[bytes] | None = None
    try:
        repo = settings.feature_repo
        use_online_store(settings, args.online_store, name)
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
        log_path = root / "processor.log"
        with open(log_path, "ab") as log:
            processor = subprocess.Popen(
                [sys.executable, "-c", "from featurectl.cli import main; main()", "process", "--file",
                 str(definition.path)],
                env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        store = FeatureStore(repo_path=str(repo))
        time.sleep(15)  # the processor joins its group (nothing to read yet: no snapshot)
        rss_idle = peak_rss_mb(processor.pid)
        with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn:
            began = time.monotonic()
            conn.execute(sql.SQL("UPDATE {} SET balance = balance + 1").format(sql.Identifier(name)))
            committed = time.monotonic() - began
        probe = random.Random(7).sample(range(1, args.rows + 1), 500)
        deadline = time.monotonic() + 3600
        last = time.monotonic()
        while True:
            seen = sample(store, probe)
            if all(v == BALANCE + 1 for v in seen):
                break
            if time.monotonic() > deadline or processor.poll() is not None:
                raise SystemExit(f"the transaction did not reach the online store; see {log_path}")
            if time.monotonic() - last > 30:
                print(f"  {sum(v == BALANCE + 1 for v in seen)} of {len(probe)} sampled rows updated, "
                      f"processor peak {peak_rss_mb(processor.pid):,.0f} MiB", flush=True)  # fmt: skip
                last = time.monotonic()
            time.sleep(1)
        visible = time.monotonic() - began
        rss = peak_rss_mb(processor.pid)
        state = transaction_state(store)
        warned = sum("made visible without atomicity" in line for line in log_path.read_text().splitlines())

        print("\n== one very large source transaction ==")
        print(
            f"command: .venv/bin/python -m bench.large_txn_bench --rows {args.rows} --online-store {args.online_store}"
        )
        print(
            f"  UPDATE of {args.rows:,} rows in one transaction (committed in {committed:.1f} s): every sampled row "
            f"visible {visible:.0f} s after it began ({args.rows / visible:,.0f} rows/s end to end)"
        )
        print(f"  processor peak memory {rss:,.0f} MiB (idle {rss_idle:,.0f} MiB before the transaction)")
        print(
            f"  FEATURECTL_TXN_MAX_ROWS={settings.txn_max_rows:,}: {warned} warning(s) in the processor's log; {state}"
        )
    finally:
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
