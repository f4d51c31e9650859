"""Scheduled jobs against the real stack: Postgres -> offline backfill, offline -> online materialisation."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.settings import PROJECT_ROOT
from tests.integration.conftest import SCALAR_STORES, StackHandle
from tests.integration.helpers import cli, history_rows, read_until, unique, wait_until
from tests.integration.platform import Platform
from tests.integration.test_processor import insert_customer

ROWS = 6000


def own_customers_table(stack: StackHandle, platform: Platform, rows: int = ROWS) -> str:
    """A table shaped like customers, seeded; the platform's customer_profile view reads it."""
    name = unique("bf")
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE customers INCLUDING ALL)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (email, full_name, country, segment, credit_limit, birth_date) "
                "SELECT 'c' || g || '@bf.example', 'C ' || g, 'GB', "
                "(ARRAY['standard','silver','gold'])[1 + g %% 3], g %% 1000, DATE '1990-01-01' + g "
                "FROM generate_series(1, %s) g"
            ).format(sql.Identifier(name)),
            (rows,),
        )
    views = platform.repo / "customers.py"
    views.write_text(
        views.read_text().replace('"cdc.table": "public.customers"', f'"cdc.table": "public.{name}"')
    )
    # Backfilled only, never captured by a connector: the Postgres capture check does not apply.
    applied = cli("feast-apply", "--no-source-check", env=platform.env)
    assert applied.returncode == 0, applied.stderr
    return name


def table_state(stack: StackHandle, name: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(stack.app) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, segment, credit_limit::float8, country FROM {}").format(sql.Identifier(name))
        )
        return {r[0]: tuple(r[1:]) for r in rows}


def history(platform: Platform) -> list[dict[str, Any]]:
    return history_rows(platform.repo, "customer_profile")


def offline_state(platform: Platform) -> dict[int, tuple[Any, ...]]:
    """Latest history row per customer."""
    rows = sorted(history(platform), key=lambda r: r["event_timestamp"])
    return {r["customer_id"]: (r["segment"], r["credit_limit"], r["country"]) for r in rows}


def backfill_proc(platform: Platform, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from featurectl.cli import main; main()",
            "backfill",
            "customer_profile",
            *args,
        ],
        env={**os.environ, **platform.env},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_backfill_is_resumable_idempotent_and_never_overlaps(stack: StackHandle, platform: Platform) -> None:
    table = own_customers_table(stack, platform)
    checkpoint = platform.settings.data_dir / "jobs" / "backfill-customer_profile.json"

    # Interrupted: killed (no chance to clean up) once a few chunks are checkpointed. It is paused
    # (SIGSTOP, still holding its lock) the moment they are seen: a whole run takes seconds only.
    first = backfill_proc(platform, "--chunk", "5")
    files = platform.repo / "data" / "offline" / "customer_profile"

    def paused_after_a_few_chunks() -> bool:
        if checkpoint.exists() and len(list(files.rglob("*.parquet"))) >= 5:
            first.send_signal(signal.SIGSTOP)
            return True
        return False

    wait_until(paused_after_a_few_chunks, 120, "a few chunks written")
    assert first.poll() is None, first.communicate()
    # A second run while the first holds the lock: refused at once, non-zero, saying why.
    second = cli("backfill", "customer_profile", env=platform.env)
    assert second.returncode != 0 and "already running" in second.stderr, second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    partial = len(history(platform))
    assert 0 < partial < ROWS

    resumed = cli("backfill", "customer_profile", "--chunk", "1000", env=platform.env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after key" in resumed.stdout
    assert offline_state(platform) == table_state(stack, table)
    ids = [r["customer_id"] for r in history(platform)]
    assert len(ids) == len(set(ids)) == ROWS  # no duplicate history
    assert not checkpoint.exists()

    again = cli("backfill", "customer_profile", env=platform.env, timeout=600)
    assert again.returncode == 0 and "0 written" in again.stdout, again.stdout
    assert len(history(platform)) == ROWS

    # A changed row is appended as new history on the next run; nothing else is.
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {} SET segment = 'platinum' WHERE id = 7").format(sql.Identifier(table)))
    changed = cli("backfill", "customer_profile", env=platform.env, timeout=600)
    assert "1 written" in changed.stdout, changed.stdout
    assert offline_state(platform)[7][0] == "platinum" and len(history(platform)) == ROWS + 1

    # A row its suite rejects goes to the dead letters; after the fix, `dlq replay` writes it to the history
    # exactly as the backfill would have (a re-run then finds nothing to write).
    with psycopg.connect(stack.app, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {} SET segment = 'vip' WHERE id = 8").format(sql.Identifier(table)))
    rejected = cli("backfill", "customer_profile", env=platform.env, timeout=600)
    assert "0 written" in rejected.stdout and "1 dead-lettered" in rejected.stdout, rejected.stdout
    (letter,) = wait_until(lambda: platform.dead_letters(), 30, "the backfill's dead letter")
    assert letter.topic == f"backfill:public.{table}" and "in_set(segment)" in letter.reason
    suite = platform.suites / "customer_profile.json"
    suite.write_text(suite.read_text().replace('"platinum"', '"platinum", "vip"'))
    replayed = cli("dlq", "replay", env=platform.env)
    assert replayed.returncode == 0, replayed.stderr
    assert "1 backfill rows into history, 0 dead-lettered again" in replayed.stdout, replayed.stdout
    assert offline_state(platform) == table_state(stack, table)
    rerun = cli("backfill", "customer_profile", env=platform.env, timeout=600)
    assert "0 written" in rerun.stdout and "0 dead-lettered" in rerun.stdout, rerun.stdout


@SCALAR_STORES
def test_materialising_into_an_empty_online_store_equals_postgres(
    stack: StackHandle, platform: Platform
) -> None:
    platform.start_processor()
    with psycopg.connect(stack.app, autocommit=True) as conn:
        ids = [
            insert_customer(conn, segment, credit)
            for segment, credit in [("standard", 10.0), ("silver", 20.0), ("gold", 30.0)]
        ]
        conn.execute("UPDATE customers SET segment = 'platinum', credit_limit = 99 WHERE id = %s", (ids[0],))
        conn.execute("DELETE FROM customers WHERE id = %s", (ids[1],))

        def postgres() -> dict[str, list[Any]]:
            state = {
                r[0]: r[1:]
                for r in conn.execute(
                    "SELECT id, segment, credit_limit::float8 FROM customers WHERE id = ANY(%s)", (ids,)
                )
            }
            return {
                "customer_id": ids,
                "segment": [state.get(i, (None, None))[0] for i in ids],
                "credit_limit": [state.get(i, (None, None))[1] for i in ids],
            }

        def online() -> dict[str, list[Any]]:
            return platform.online("customer_profile", "customer_id", ids, ["segment", "credit_limit"])

        expected = postgres()
        wait_until(lambda: online() == expected, 60, "the processor's writes")
    platform.stop_all()

    # An empty online store (whichever it is), then the history materialised into it.
    emptied = cli("online", "reset", "--yes", env=platform.env)
    assert emptied.returncode == 0, emptied.stderr
    assert cli("feast-apply", env=platform.env).returncode == 0
    assert online()["segment"] == [None, None, None]
    result = cli("materialize", env=platform.env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert online() == expected
    again = cli("materialize", "customer_profile", "--incremental", env=platform.env)
    assert (
        again.returncode == 0 and "materialize customer_profile: 0 history files, 0 rows" in again.stdout
    ), again.stdout


@pytest.mark.parametrize("signal_platform", ["sqlite", "postgres", "redis"], indirect=True)
def test_an_incremental_snapshot_re_emits_every_row_while_live_changes_flow(
    stack: StackHandle, signal_platform: Platform
) -> None:
    platform = signal_platform
    with psycopg.connect(stack.app, autocommit=True) as conn:
        ids = [insert_customer(conn, "standard", float(i)) for i in range(300)]
    platform.start_processor()

    # Live changes all through the snapshot.
    stop = threading.Event()
    updated: set[int] = set()

    def writer() -> None:
        with psycopg.connect(stack.app, autocommit=True) as conn:
            while not stop.is_set():
                cid = random.choice(ids)
                conn.execute("UPDATE customers SET credit_limit = credit_limit + 1 WHERE id = %s", (cid,))
                updated.add(cid)
                time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        result = cli(
            "snapshot",
            "public.customers",
            "--wait",
            "240",
            "--file",
            str(platform.definition.path),
            env=platform.env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "completed" in result.stdout
    finally:
        stop.set()
        thread.join(30)
    assert len(updated) > 50

    # Every row was re-emitted as op "r": the 300 inserted after the connector started have no other
    # "r" event; rows from before also have one from the connector's initial snapshot. A row changed
    # while its chunk was being read is not re-emitted: its live change event stands for it (Debezium
    # drops the chunk's copy so that no older state follows a newer one).
    with psycopg.connect(stack.app) as conn:
        live = {r[0] for r in conn.execute("SELECT id FROM customers")}
    older = live - set(ids)

    def reemitted(events: list[Any]) -> bool:
        counts = Counter(e.key["id"] for e in events if e.op == "r" and e.key)
        return all(counts[i] >= 1 or i in updated for i in ids) and all(counts[i] >= 2 for i in older)

    read_until(platform.settings, [platform.topic("public.customers")], reemitted, timeout_s=120)

    # And the online store ends equal to Postgres, live changes included.
    with psycopg.connect(stack.app) as conn:
        expected = dict(
            conn.execute(
                "SELECT id, credit_limit::float8 FROM customers WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        )

    def online_equals() -> bool:
        got = platform.online("customer_profile", "customer_id", ids, ["credit_limit"])["credit_limit"]
        return got == [expected[i] for i in ids]

    wait_until(online_equals, 120, "the online store equal to Postgres")
