"""Reads never see half a source transaction (stores/transactions.py): transfers between accounts, two UPDATEs
per Postgres transaction (the sum of balances never changes in Postgres), streamed by the real connector and
processor while a reader sums every balance from the online store in one lookup. A sum Postgres never had is
a broken read. With one processor killed with SIGKILL mid-stream and started again, and with two workers
(a transaction's changes in partitions owned by different processes); afterwards the online store equals
Postgres (nothing lost)."""

from __future__ import annotations

import multiprocessing
import random
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from feast import FeatureStore
from psycopg import sql

from bench.transfers_bench import BALANCE, VIEW, balances, transfer
from connectors.deploy import deploy, remove
from stores.history.reader import History
from stores.registry import kinds, transaction_state
from tests.integration.conftest import StackHandle, use_online_store
from tests.integration.helpers import cli, unique, wait_until
from tests.integration.platform import Platform, make_platform

ACCOUNTS = 100
RATE = 300  # source transactions/s
READS = 1500  # per test, over SECONDS at least; the bench reads 10,000 (bench/transfers_bench.py)
SECONDS = 15
ATOMIC = [k.name for k in kinds() if k.atomic_source_transactions]


@pytest.fixture
def accounts(
    stack: StackHandle, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Platform, str]]:
    """A table of ACCOUNTS accounts at BALANCE each, captured by its own connector (with transaction metadata),
    its view applied on the parametrised online store."""
    table = unique("accounts")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, balance bigint NOT NULL)").format(
                sql.Identifier(table)
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT i, %s FROM generate_series(1, %s) i").format(
                sql.Identifier(table)
            ),
            (BALANCE, ACCOUNTS),
        )
    plat = make_platform(stack.settings, stack.admin, tmp_path, unique("tx"), tables=(f"public.{table}",))
    use_online_store(
        plat, request.param, request
    )  # before the shop's views go: it edits them for some stores
    for module in ("customers.py", "orders.py", "products.py", "feature_services.py"):
        (plat.repo / module).unlink()
    (plat.repo / "accounts.py").write_text(VIEW.format(table=table))
    (plat.suites / "account_balance.json").write_text('{"name": "account_balance", "expectations": []}')
    deploy(stack.settings, plat.definition, timeout_s=120)
    applied = cli("feast-apply", "--file", str(plat.definition.path), env=plat.env, timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield plat, table
    plat.stop_all()
    remove(stack.settings, plat.definition)
    with psycopg.connect(stack.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(plat.name)))
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def source(stack: StackHandle, table: str) -> list[int]:
    with psycopg.connect(stack.app) as conn:
        query = sql.SQL("SELECT balance FROM {} ORDER BY id").format(sql.Identifier(table))
        return [int(r[0]) for r in conn.execute(query)]


@pytest.mark.parametrize("accounts", ATOMIC, indirect=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_no_read_sees_half_a_transfer_through_a_processor_kill_and_the_store_ends_equal_to_postgres(
    stack: StackHandle, accounts: tuple[Platform, str], workers: int
) -> None:
    plat, table = accounts
    processor = plat.start_processor("p1", "--workers", str(workers))
    store = FeatureStore(repo_path=str(plat.repo))
    total = BALANCE * ACCOUNTS
    wait_until(
        lambda: None not in (seen := balances(store, ACCOUNTS)) and sum(seen) == total,
        180,
        "the snapshot online",
        lambda: plat.log("p1")[-3000:],
    )

    spawn = multiprocessing.get_context("spawn")
    stop, done = spawn.Event(), spawn.Value("q", 0)
    writer = spawn.Process(
        target=transfer, args=(stack.app, table, ACCOUNTS, RATE, stop, done), name="transfers"
    )
    writer.start()
    broken: list[int] = []
    reads = 0
    try:
        wait_until(lambda: done.value > 0 or not writer.is_alive(), 120, "the first transfer")
        assert writer.is_alive(), writer.exitcode
        until = time.monotonic() + SECONDS
        while reads < READS or time.monotonic() < until:
            if reads == READS // 3 and workers == 1:
                processor.send_signal(signal.SIGKILL)  # mid-stream: held rows, uncommitted offsets
                processor.wait(30)
                processor = plat.start_processor("p2", "--workers", "1")
            off = sum(v or 0 for v in balances(store, ACCOUNTS)) - total
            reads += 1
            if off:
                broken.append(off)
    finally:
        stop.set()
        writer.join(30)
    transfers = done.value
    assert transfers > 2000, transfers  # the reads overlapped a real stream of transactions

    want = source(stack, table)
    wait_until(lambda: balances(store, ACCOUNTS) == want, 180, "the online store equal to Postgres",
               lambda: plat.log("p2" if workers == 1 else "p1")[-3000:])  # fmt: skip
    assert not broken, f"{len(broken)} of {reads} reads saw half a transfer (sums off by {broken[:10]})"
    assert not plat.dead_letters()
    # Nothing left held, nothing made visible without atomicity (what `featurectl health` reports).
    wait_until(
        lambda: (state := transaction_state(store)) is not None and state.held_rows == 0, 60, "no held rows"
    )
    assert transaction_state(store).partial == 0  # type: ignore[union-attr]
    training_sets_hold_whole_transfers(store, total)
    assert processor.poll() is None, plat.log("p2" if workers == 1 else "p1")[-3000:]


def training_sets_hold_whole_transfers(store: FeatureStore, total: int) -> None:
    """The offline history keeps transactions whole by commit time: a training set of every account at an
    instant T (a transfer's commit time exactly, a microsecond before, and one after; past the snapshot's
    reads, which are among the first fifth of the instants) sums to the total."""
    history = History(store, store.get_feature_view("account_balance"))
    stamps = sorted(
        set(history.dataset(history.files()).to_table(columns=["event_timestamp"]).column(0).to_pylist())
    )
    rng = random.Random(3)
    instants = [
        t + timedelta(microseconds=d) for t in rng.sample(stamps[len(stamps) // 5 :], 10) for d in (-1, 0, 1)
    ]
    labels = pd.DataFrame(
        [{"account_id": a, "event_timestamp": t} for t in instants for a in range(1, ACCOUNTS + 1)]
    )
    got = store.get_historical_features(entity_df=labels, features=["account_balance:balance"]).to_df()
    sums = got.groupby("event_timestamp")["balance"].sum()
    broken = sums[sums != total]
    assert broken.empty, (
        f"training sets at {len(broken)} of {len(sums)} instants hold half a transfer: {broken.head()}"
    )
