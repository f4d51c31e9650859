"""What atomic visibility of source transactions costs (docs/processor.md, Transactions): the processor bench run
with the rule off (each row visible as written, as before) and on, one after the other, per online store, in one
run; catch-up rows/s and commit-to-online freshness at a steady rate, side by side with the ratios.

    .venv/bin/python -m bench.transactions_cost                          # SQLite, Postgres, Redis; 1,000 changes/s
    .venv/bin/python -m bench.transactions_cost --stores sqlite --rows 10000 --seconds 15
    .venv/bin/python -m bench.transactions_cost --txn-rows 200 --seconds 10   # a backlog of ordinary transactions

Targets (issue 49): freshness p99 with the rule no worse than 1.2x without, catch-up no worse than 0.9x.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass

from core.settings import PROJECT_ROOT

CATCH_UP = re.compile(r"catch-up from Kafka: .*= ([\d,]+) rows/s")
E2E = re.compile(r"end to end \(Postgres commit -> online\), bulk updates: .*= ([\d,]+) rows/s")
FRESH = re.compile(r"freshness at \d+ changes/s .*commit-to-online p50 (\d+) ms, p99 (\d+) ms")


@dataclass
class Figures:
    catch_up: float  # rows/s
    e2e: float  # rows/s
    p50: float  # ms
    p99: float  # ms


def median(runs: list[Figures]) -> Figures:
    return Figures(
        *(statistics.median(getattr(r, f) for r in runs) for f in ("catch_up", "e2e", "p50", "p99"))
    )


def run(store: str, atomic: bool, rows: int, rate: int, seconds: int, txn_rows: int) -> Figures:
    """One processor bench run; its figures (it prints the rest to our stdout as it goes)."""
    command = [
        sys.executable, "bench/processor_bench.py", "--rows", str(rows), "--rate", str(rate),
        "--seconds", str(seconds), "--online-store", store, "--seed-txn-rows", str(txn_rows),
    ]  # fmt: skip
    env = {**os.environ, "FEATURECTL_ATOMIC_TRANSACTIONS": "true" if atomic else "false"}
    print(f"-- {store}, atomic transactions {'on' if atomic else 'off'}: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"processor bench failed ({store}, atomic={atomic}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    caught, e2e, fresh = CATCH_UP.search(done.stdout), E2E.search(done.stdout), FRESH.search(done.stdout)
    if caught is None or e2e is None or fresh is None:
        raise SystemExit(f"processor bench printed no figures:\n{done.stdout[-3000:]}")
    figures = Figures(
        float(caught.group(1).replace(",", "")),
        float(e2e.group(1).replace(",", "")),
        float(fresh.group(1)),
        float(fresh.group(2)),
    )
    print(
        f"   catch-up {figures.catch_up:,.0f} rows/s; end to end {figures.e2e:,.0f} rows/s; "
        f"freshness p50 {figures.p50:.0f} ms, p99 {figures.p99:.0f} ms",
        flush=True,
    )
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stores", default="sqlite,postgres,redis")
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--rate", type=int, default=1000, help="changes/s of the freshness run")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2, help="off/on pairs per store; medians are reported")
    ap.add_argument(
        "--txn-rows",
        type=int,
        default=0,
        help="rows per source transaction of the catch-up's backlog; 0 (the worst case): one transaction of "
        "--rows, every row but the last batch's held",
    )
    args = ap.parse_args()
    table = []
    for store in args.stores.split(","):
        offs, ons = [], []
        for _ in range(args.repeat):
            offs.append(run(store, False, args.rows, args.rate, args.seconds, args.txn_rows))
            ons.append(run(store, True, args.rows, args.rate, args.seconds, args.txn_rows))
        table.append((store, median(offs), median(ons)))
    print("\n== atomic visibility of source transactions: what it costs ==")
    print(
        f"command: .venv/bin/python -m bench.transactions_cost --stores {args.stores} --rows {args.rows} "
        f"--rate {args.rate} --seconds {args.seconds} --repeat {args.repeat} --txn-rows {args.txn_rows}"
    )
    print(
        "| store | catch-up off / on (rows/s) | ratio (>= 0.9) | end to end off / on (rows/s) | ratio | "
        "freshness p50 off / on | p99 off / on | p99 ratio (<= 1.2) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for store, off, on in table:
        print(
            f"| {store} | {off.catch_up:,.0f} / {on.catch_up:,.0f} | {on.catch_up / off.catch_up:.2f} | "
            f"{off.e2e:,.0f} / {on.e2e:,.0f} | {on.e2e / off.e2e:.2f} | "
            f"{off.p50:.0f} / {on.p50:.0f} ms | {off.p99:.0f} / {on.p99:.0f} ms | {on.p99 / max(off.p99, 1):.2f} |"
        )


if __name__ == "__main__":
    main()
