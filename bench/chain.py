"""The whole chain in one command: every bench, then one table of the figures a user asks about.

    .venv/bin/python -m bench.chain            # full size, one bench at a time (~1 h with 1M vectors, m 32)
    .venv/bin/python -m bench.chain --small    # seconds per bench, two at a time: does everything run?
    .venv/bin/python -m bench.chain --vectors 100000   # a smaller vector store

Runs the processor bench and the serving bench on each online store (SQLite, Redis, Postgres), the
vector bench on Postgres + pgvector (and how hard its data is against real embeddings), the online-store,
point-in-time, drift and embedding benches, and commit-to-searchable on pgvector and Milvus; prints
each bench's own output (with the command that produced it), then the chain table: the Debezium ceiling,
the processor (end to end, catch-up) against Feast's push into the same store, freshness, lookups idle
and under ingest, vectors. Figures come from the benches' printed lines; a line this script cannot find
is an error (exit 1), so a bench whose output changed is noticed (CI runs ``--small``). A full run writes
everything it printed to docs/runs/ under its commit, date and machine (bench/record.py), the record README's
Performance table is written from.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench import record

STORES = ("sqlite", "redis", "postgres")
WORKERS = {"sqlite": "1", "redis": "2", "postgres": "2"}
LABELS = {"sqlite": "SQLite", "redis": "Redis", "postgres": "Postgres"}


@dataclass(frozen=True)
class Run:
    name: str
    args: tuple[str, ...]

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", f"bench.{self.name}", *self.args]


def runs(small: bool, vectors: int) -> list[Run]:
    processor = (
        ["--rows", "300", "--rate", "50", "--seconds", "2"]
        if small
        # 100,000: with two workers 30,000 rows drained in 2-3 s, where one rebalance or one worker finishing
        # first moved the catch-up 10.5k-21k rows/s between two runs (Redis, 2026-11-25 and -26).
        else ["--rows", "100000", "--rate", "1000", "--seconds", "10"]
    )
    # A p99 of 300 lookups is their third slowest, which moved 8-15 ms run to run (Redis, under ingest); 1,000
    # estimate it better (docs/performance.md).
    serving = (
        ["--rows", "100", "--requests", "20", "--seconds", "1", "--log-pairs", "2"]
        if small
        else ["--requests", "1000"]
    )
    # Postgres and Redis take writers side by side: two processes (featurectl process --workers 2), one per
    # core. SQLite serialises its writers, where a second process measured no gain (docs/performance.md).
    out = [Run("processor_bench", (*processor, "--workers", WORKERS[s], "--online-store", s)) for s in STORES]
    out += [Run("serving_bench", (*serving, "--online-store", s)) for s in STORES]
    out.append(
        Run(
            "vector_scale_bench",
            (
                "--vectors",
                "300",
                "--queries",
                "5",
                "--warm-up",
                "20",
                "--ef-search",
                "100,200",
                "--writing",
                "200",
                # The sign-bit index (quantization: binary) runs here, so CI keeps its path working; the full
                # size measures the vector index (below).
                "--quantization",
                "binary",
                "--rerank",
                "100",
            )
            if small
            else (
                "--vectors",
                str(vectors),
                # A p99 of 100 queries is their slowest but one; 300 estimate it better.
                "--queries",
                "300",
                "--ef-search",
                "100,200,400",
                "--writing",
                "1000",
                # From half a million up, the graph docs/stores.md advises (recall@10 >= 0.95 at a million).
                # The vectors themselves in the index: their sign bits (--quantization binary) measured 7%
                # faster at 0.01-0.02 less recall on the same million (docs/performance.md), not worth it.
                *(("--m", "32", "--ef-construction", "128") if vectors >= 500_000 else ()),
            ),
        )
    )
    if small:
        # An index of your own (vector_index: external) with its search_settings: pgvector's IVFFlat stands in
        # for VectorChord's vchordrq (not installable here; measured in docs/performance.md), so CI keeps the path.
        out.append(
            Run(
                "vector_scale_bench",
                (
                    *("--vectors", "300", "--queries", "5", "--warm-up", "20", "--writing", "200"),
                    *("--vector-index", "external", "--search-setting", "ivfflat.probes=4"),
                    *("--index", "USING ivfflat (vector vector_cosine_ops) WITH (lists = 4)"),
                ),
            )
        )
    out.append(Run("vector_data_bench", ("--texts", "500", "--queries", "20") if small else ()))
    out.append(
        Run("online_store_bench", ("--rows", "200", "--vectors", "100", "--queries", "10") if small else ())
    )
    out.append(
        Run("pit_bench", ("--history", "2000", "--entities", "200", "--labels", "200") if small else ())
    )
    out.append(Run("drift_bench", ("--history", "20000", "--entities", "2000") if small else ()))
    out.append(Run("embedding_bench", ("--texts", "20", "--sizes", "100", "--queries", "5") if small else ()))
    out.append(
        Run(
            "aggregation_bench",
            (
                "--orders",
                "2000",
                "--customers",
                "50",
                "--requests",
                "20",
                "--seconds",
                "2",
                "--rate",
                "50",
                "--labels",
                "100",
            )
            if small
            else ("--orders", "100000", "--customers", "1000"),
        )
    )
    out.append(Run("repair_bench", ("--rows", "300", "--shapes", "bigint_date") if small else ()))
    out.append(
        Run(
            "search_freshness_bench",
            ("--rows", "3", "--rate", "5", "--stores", "milvus") if small else ("--rows", "200"),
        )
    )
    return out


class _Unknown(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def _find(pattern: str, text: str, where: str, missing: list[str]) -> tuple[str, ...]:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        missing.append(f"{where}: no line matching {pattern!r}")
        return ("?",) * re.compile(pattern).groups
    return found.groups()


def table(outputs: dict[Run, str]) -> tuple[list[str], list[str]]:
    """The chain table's lines, and the figures not found (each names its bench and pattern)."""
    missing: list[str] = []
    cols: dict[str, dict[str, str]] = {s: {} for s in STORES}
    for run, out in outputs.items():
        store = run.args[-1] if "--online-store" in run.args else ""
        if run.name == "processor_bench":
            c = cols[store]
            (c["workers"],) = _find(r"^command: .*--workers (\d+)", out, run.name, missing)
            (c["ceiling"],) = _find(
                r"^\| Debezium -> Kafka -> bare consumer.*? \| ([\d,.]+|nan) \|", out, run.name, missing
            )
            c["e2e"], c["e2e_ratio"] = _find(
                r"^\| processor end to end .*? \| ([\d,]+) \| ([\d.]+) of the ceiling", out, run.name, missing
            )
            c["catch"], c["catch_ratio"] = _find(
                r"^\| processor catch-up from Kafka \| ([\d,]+) \| ([\d.]+)x Feast push",
                out,
                run.name,
                missing,
            )
            (c["push"],) = _find(r"^\| Feast store\.push\(ONLINE\).*? \| ([\d,]+) \|", out, run.name, missing)
            c["fresh"] = "{} / {} ms".format(
                *_find(r"^\| freshness at .*? \| (\d+) / (\d+) ms", out, run.name, missing)
            )
        elif run.name == "serving_bench":
            c = cols[store]
            for server, key in (("featurectl serve", "ours"), ("feast serve", "feast")):
                for size in (1, 100):
                    for offered in ("at once", r"[\d,]+/s"):
                        figures = _find(
                            rf"^\| {server} \| {size} \| ({offered}) \|\s+([\d,]+)/s .*?p99\s+([\d.]+) ms.*?\|"
                            rf"\s+([\d,]+)/s .*?p99\s+([\d.]+) ms",
                            out,
                            run.name,
                            missing,
                        )
                        if len(figures) == 5:
                            _, idle_rps, idle_p99, busy_rps, busy_p99 = figures
                            slot = f"{key}{size}{'at' if offered == 'at once' else 'paced'}"
                            c[slot] = f"{idle_rps} ({idle_p99} ms) / {busy_rps} ({busy_p99} ms)"
            idle, busy = _find(
                r"^\s+in-process SDK, 100 entities\s+idle: p50 [\d.]+ ms, p99 ([\d.]+) ms\s+under ingest: p50 [\d.]+ ms, "
                r"p99 ([\d.]+) ms",
                out,
                run.name,
                missing,
            )
            c["sdk100"] = f"{idle} / {busy} ms"
    lines = [
        "| | " + " | ".join(LABELS[s] for s in STORES) + " |",
        "|---|" + "---:|" * len(STORES),
    ]

    def row(label: str, cell: str) -> None:
        # A figure whose bench failed (or printed nothing for it) shows as "?"; the failure is reported.
        cells = [cell.format_map(_Unknown(cols[s])) for s in STORES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("Debezium -> Kafka -> bare consumer (the ceiling), rows/s", "{ceiling}")
    row("processor processes (featurectl process --workers)", "{workers}")
    row("processor end to end, commit -> online, rows/s (of the ceiling)", "{e2e} ({e2e_ratio})")
    row("processor catch-up, rows/s (x Feast push)", "{catch} ({catch_ratio}x)")
    row("Feast store.push(ONLINE) into the same store (anchor), rows/s", "{push}")
    row("freshness at the bench's rate, commit -> online p50 / p99", "{fresh}")
    row(
        "HTTP 1 entity, 8 connections at once: featurectl serve lookups/s (p99), idle / under ingest",
        "{ours1at}",
    )
    row("  same, Feast's own server (feast serve, the anchor)", "{feast1at}")
    row(
        "HTTP 1 entity offered at 2,500/s: featurectl serve lookups/s (p99), idle / under ingest",
        "{ours1paced}",
    )
    row(
        "HTTP 100 entities, 8 connections at once: featurectl serve lookups/s (p99), idle / under ingest",
        "{ours100at}",
    )
    row("  same, Feast's own server (feast serve, the anchor)", "{feast100at}")
    row(
        "HTTP 100 entities offered at 400/s: featurectl serve lookups/s (p99), idle / under ingest",
        "{ours100paced}",
    )
    row("lookup p99, in-process SDK 100 entities: idle / under ingest", "{sdk100}")
    for run, out in outputs.items():
        if run.name == "vector_scale_bench":
            (load,) = _find(
                r"written through the sink, no index: .*?\(([\d,]+) vectors/s\)", out, run.name, missing
            )
            index = "your own index" if "--index" in run.args else "HNSW"
            lines.append(
                f"\nvectors (Postgres + pgvector, {index}): loaded through the sink at {load} vectors/s"
            )
            for size, ef, p50, p99, recall in re.findall(
                r"^top-10 of ([\d,]+) \(ef_search (\d+)\): p50/p99\s+([\d.]+) /\s+([\d.]+) ms, recall@10 ([\d.]+)",
                out,
                re.MULTILINE,
            ):
                lines.append(
                    f"  top-10 of {size}, ef_search {ef}: p50 {p50} ms, p99 {p99} ms, recall@10 {recall}"
                )
            if "top-10 of" not in out:
                missing.append("vector_scale_bench: no top-10 line")
            writing = re.findall(
                r"^top-10 of ([\d,]+) while ([\d,]+) vectors/s are written \(ef_search (\d+)\): "
                r"p50/p99\s+([\d.]+) /\s+([\d.]+) ms, recall@10 ([\d.]+)",
                out,
                re.MULTILINE,
            )
            for size, rate, ef, p50, p99, recall in writing:
                lines.append(
                    f"  top-10 of {size} while {rate} vectors/s are written, ef_search {ef}: p50 {p50} ms, "
                    f"p99 {p99} ms, recall@10 {recall}"
                )
            if not writing:
                missing.append("vector_scale_bench: no top-10 line under writing")
        if run.name == "vector_data_bench":
            for kind in ("real", "structured", "isotropic"):
                cos, lid = _find(
                    rf"^\| {kind}: .*? \| ([\d./]+) \| [\d.]+ \| ([\d.]+) \|", out, run.name, missing
                )
                lines.append(
                    f"  the {kind} vectors' hardness: cosine of the 1st/10th/100th nearest {cos}, LID@20 {lid}"
                )
        if run.name == "search_freshness_bench":
            lines.append(
                "\ncommit in Postgres -> searchable (retrieve_online_documents_v2 finds the row), p50 / p99:"
            )
            found = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| \d+ \|$", out, re.MULTILINE)
            for store, p50, p99 in found:
                lines.append(f"  {store}: {p50} / {p99} ms")
            if not found:
                missing.append("search_freshness_bench: no store line")
        if run.name == "aggregation_bench":
            (orders,) = _find(r"^\| of which orders/s \| ([\d,]+) \|", out, run.name, missing)
            fresh = _find(r"^\| freshness at .*? p50 / p99 \| (\d+) / (\d+) ms \|", out, run.name, missing)
            one = _find(
                r"^\| lookup p50 / p99, 1 customer \((\d+) orders.*? \| ([\d.]+) / ([\d.]+) ms \|",
                out,
                run.name,
                missing,
            )
            row_view = _find(
                r"^\| anchor: row view lookup p50 / p99, 1 order \| ([\d.]+) / ([\d.]+) ms \|",
                out,
                run.name,
                missing,
            )
            stored = _find(
                r"^\| contributions stored / orders within 30 d .*? \| ([\d,]+) / ([\d,]+) \|",
                out,
                run.name,
                missing,
            )
            agg_set = _find(
                r"^\| training set of ([\d,]+) customer labels, 7 aggregations \| ([\d.]+) s \|",
                out,
                run.name,
                missing,
            )
            row_set = _find(
                r"^\| anchor: training set of [\d,]+ order labels, row view \| ([\d.]+) s \|",
                out,
                run.name,
                missing,
            )
            lines.append(
                f"\naggregation view (SQLite; orders -> order_status + customer_orders): catch-up {orders} orders/s, "
                f"commit -> value readable p50 / p99 {fresh[0]} / {fresh[1]} ms; lookup of 1 customer ({one[0]} orders "
                f"in 30 d, computed at read time) p50 / p99 {one[1]} / {one[2]} ms vs a row view's {row_view[0]} / {row_view[1]} ms; "
                f"state {stored[0]} contributions for {stored[1]} orders within the longest window; training set of "
                f"{agg_set[0]} labels {agg_set[1]} s vs a row view's {row_set[0]} s"
            )
        if run.name == "drift_bench":
            rows, secs, rate = _find(
                r"^drift check: ([\d,]+) current \+ [\d,]+ reference rows.*?, ([\d.]+) s \(([\d,]+) rows/s\)",
                out,
                run.name,
                missing,
            )
            (ratio,) = _find(r"^Feast compute_monitoring_metrics.*?\(([\d.]+)x\)", out, run.name, missing)
            lines.append(
                f"\ndrift check over the history: {secs} s for a window of {rows} changes and its 30-day reference "
                f"({rate} rows/s; {ratio}x Feast's monitoring compute of the same ranges)"
            )
    return lines, missing


def prepare() -> None:
    """Start the local stack and both production online stores once, and install wrk (the serving bench's load),
    before any bench: benches run side by side in ``--small`` mode, and two of them starting the same server at
    once race for its port (two apt-get runs, for dpkg's lock)."""
    from core.settings import load_settings
    from services.system import ensure_command
    from stack.launcher import STORE_EXTRAS, LocalStack

    settings = load_settings()
    LocalStack(settings).up(extras=STORE_EXTRAS)
    ensure_command("wrk", "wrk")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="seconds per bench, two at a time: a smoke run")
    ap.add_argument("--vectors", type=int, default=1_000_000, help="vectors in the vector bench (full mode)")
    ap.add_argument(
        "--record",
        type=Path,
        default=None,
        help="also write what the chain prints, under its commit, date and machine, to this file (full mode: "
        "docs/runs/chain-<date>-<commit>.txt unless given; README's table is written from such a record by "
        "`python -m bench.record`)",
    )
    args = ap.parse_args()
    command = [sys.executable, "-m", "bench.chain", *sys.argv[1:]]
    record_to = args.record or (None if args.small else record.default_path())
    head = record.header(command)  # the commit measured: taken before the benches run
    plan = runs(args.small, args.vectors)
    started = time.monotonic()
    prepare()
    printed: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        printed.append(text)

    def run(r: Run) -> tuple[Run, subprocess.CompletedProcess[str], float]:
        print(f"running: {' '.join(r.command)}", file=sys.stderr, flush=True)
        began = time.monotonic()
        result = subprocess.run(r.command, capture_output=True, text=True)
        return r, result, time.monotonic() - began  # where a run's time goes (CI runs --small)

    # Full mode one at a time: benches on one machine would measure each other.
    with ThreadPoolExecutor(max_workers=2 if args.small else 1) as pool:
        done = list(pool.map(run, plan))
    failed = []
    for r, result, seconds in done:
        emit(
            f"\n===== {' '.join(r.command[2:])} (exit {result.returncode}, {seconds:.0f} s)\n{result.stdout}"
        )
        if result.returncode != 0:
            failed.append(f"{r.name} {' '.join(r.args)}: exit {result.returncode}\n{result.stderr[-3000:]}")
    lines, missing = table({r: res.stdout for r, res, _ in done if res.returncode == 0})
    emit(f"\n{record.TABLE_START} ({time.monotonic() - started:.0f} s in all)")
    emit(f"command: {' '.join(command)}")
    emit("\n".join(lines))
    problems = failed + missing
    if record_to is not None:
        record_to.parent.mkdir(parents=True, exist_ok=True)
        record_to.write_text(head + "\n".join(printed) + "\n")
        print(f"\nrecorded in {record_to}", file=sys.stderr)
    if problems:
        print("\nnot measured:\n" + "\n".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
