"""Point-in-time join cost before and after ``featurectl compact``.

History as the processor leaves it: ``--history`` rows of customer_profile over ``--entities``
customers, one Parquet file per ``--batch`` rows (one per micro-batch), with ``--dup`` of the rows
written a second time (re-delivered batches). Then Feast's ``get_historical_features`` for
``--labels`` label rows, timed; then ``jobs.compact.compact``, timed; then the same join again. The
two training sets must be equal (duplicates carry the same values). No stack needed.

``--format delta`` (the default, as feature_repo/ declares) writes the history as Delta commits of
``--batch`` rows and joins through the project's DuckDB offline store; ``--format parquet --store dask``
is the anchor: Parquet files in a directory joined by Feast's own file (dask) store.

    .venv/bin/python -m bench.pit_bench --history 10000000 --labels 100000 --batch 10000
    .venv/bin/python -m bench.pit_bench --format parquet --store dask --history 1000000 --labels 100000
    .venv/bin/python -m bench.pit_bench --store spark --history 10000000 --labels 100000 --batch 10000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from bench.common import use_parquet_history
from core.settings import PROJECT_ROOT
from jobs.compact import compact
from stores.history.duckdb_store import TYPE as DUCKDB_STORE
from stores.history.sink import HistorySink
from stores.repository import copy_repo, feast_apply

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def history(store: FeatureStore, rows: int, entities: int, batch: int, dup: float, seed: int = 7) -> int:
    """Write the synthetic history; returns the number of files."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from stores.history.delta import PARTITION, with_partition
    from stores.history.reader import is_delta
    from stores.history.schema import history_schema

    view = store.get_feature_view("customer_profile")
    directory = HistorySink(store).directory(view)
    directory.mkdir(parents=True, exist_ok=True)
    delta = is_delta(view)
    schema = history_schema(view)
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, entities + 1, rows)
    # 90 days of changes, in stream order, at microsecond resolution like commit times: two changes of
    # one entity at the same instant are one transaction's, which compaction rightly reduces to one.
    micros = np.sort(rng.integers(0, 90 * 86400 * 10**6, rows))
    files = 0
    for start in range(0, rows, batch):
        sl = slice(start, min(start + batch, rows))
        n = sl.stop - sl.start
        when = [T0 + timedelta(microseconds=int(s)) for s in micros[sl]]
        columns = {
            "customer_id": ids[sl],
            "country": ["GB"] * n,
            "segment": rng.choice(["standard", "silver", "gold"], n),
            "credit_limit": rng.random(n) * 1000,
            "birth_date": [None] * n,
            "event_timestamp": when,
            "ingested_at": when,
            "cdc_op": ["u"] * n,
            "cdc_deleted": [False] * n,
            "cdc_version": np.arange(sl.start, sl.stop) * 100,
            "cdc_version_minor": np.arange(sl.start, sl.stop) * 100,
            "cdc_source": ["bench"] * n,
            "cdc_embedding_model": [None] * n,
        }
        # Features the view gained since this bench was written (e.g. email) are null here.
        columns.update({f.name: [None] * n for f in schema if f.name not in columns})
        table = pa.table({name: columns[name] for name in schema.names}).cast(schema)
        copies = 2 if rng.random() < dup else 1  # the batch re-delivered and written again
        for copy in range(copies):
            if delta:
                write_deltalake(
                    str(directory), with_partition(table), mode="append", partition_by=[PARTITION]
                )
            else:
                pq.write_table(table, directory / f"part-{files:06d}-{copy}.parquet")
            files += 1
        if start // batch % 100 == 0:
            print(f"  history: {sl.stop:,} of {rows:,} rows", file=sys.stderr, flush=True)
    return files


KEYS = ("customer_id", "event_timestamp")


def spark_store(repo: Path) -> FeatureStore:
    """The same repository read by the Spark offline store (local mode, this host's cores)."""
    yaml = repo / "feature_store.yaml"
    spark_yaml = repo / "feature_store.spark.yaml"
    spark_yaml.write_text(
        yaml.read_text().replace(
            f"type: {DUCKDB_STORE}",
            "type: stores.history.spark_store.DeltaSparkOfflineStore\n  spark_conf:\n"
            '    spark.ui.enabled: "false"\n    spark.driver.memory: 4g',
        )
    )
    return FeatureStore(repo_path=str(repo), fs_yaml_file=spark_yaml)


def join(store: FeatureStore, labels: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    df = store.get_historical_features(
        labels, ["customer_profile:segment", "customer_profile:credit_limit"]
    ).to_df()
    took = time.perf_counter() - start
    if df["event_timestamp"].dt.tz is None:  # Feast's Spark store returns UTC times without their zone
        df["event_timestamp"] = df["event_timestamp"].dt.tz_localize("UTC")
    df["event_timestamp"] = df["event_timestamp"].astype("datetime64[us, UTC]")  # Spark's are in ns
    df = df[["customer_id", "event_timestamp", *sorted(c for c in df.columns if c not in KEYS)]]
    return took, df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per history file (a micro-batch)")
    parser.add_argument("--dup", type=float, default=0.05, help="share of batches written twice")
    parser.add_argument("--format", choices=["delta", "parquet"], default="delta", help="history layout")
    parser.add_argument(
        "--store",
        choices=["duckdb", "dask", "spark"],
        default="duckdb",
        help="Feast offline store doing the join (spark: local[*], with the DuckDB join of the same history "
        "beside it; needs the spark extra and `featurectl stack install --spark`)",
    )
    parser.add_argument(
        "--skip-before",
        action="store_true",
        help="time only the join after compaction (the one before can take long)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pit-bench-"))
    try:
        copy_repo(PROJECT_ROOT / "feature_repo", root / "feature_repo")
        repo = root / "feature_repo"
        if args.format == "parquet":
            use_parquet_history(repo)
        if args.store == "dask":
            yaml = repo / "feature_store.yaml"
            yaml.write_text(yaml.read_text().replace(DUCKDB_STORE, "file"))
        feast_apply(repo)
        store = FeatureStore(repo_path=str(root / "feature_repo"))
        files = history(store, args.history, args.entities, args.batch, args.dup)
        joiner = spark_store(repo) if args.store == "spark" else store
        rng = np.random.default_rng(11)
        labels = pd.DataFrame(
            {
                "customer_id": rng.integers(1, args.entities + 1, args.labels),
                "event_timestamp": [
                    T0 + timedelta(seconds=int(s)) for s in rng.integers(0, 95 * 86400, args.labels)
                ],
            }
        )
        before_s, before = float("nan"), None
        if not args.skip_before:
            join(joiner, labels.head(10))  # warm-up: imports, dask or Spark start-up are not the join's cost
            before_s, before = join(joiner, labels)
        start = time.perf_counter()
        report = compact(store, store.get_feature_view("customer_profile"))
        compact_s = time.perf_counter() - start
        if args.skip_before:
            join(joiner, labels.head(10))  # the same warm-up, on the compacted history
        after_s, after = join(joiner, labels)
        same = before is None or before.equals(after)
        beside = ""
        if joiner is not store:  # the anchor: DuckDB over the same compacted history, same labels
            join(store, labels.head(10))
            duck_s, duck = join(store, labels)
            equal = duck.equals(after)
            same = same and equal
            beside = f"DuckDB store, same history and labels: {duck_s:.1f} s; training sets equal: {equal}"
        print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.pit_bench', *sys.argv[1:]])}")
        print(
            f"history ({args.format}, joined by {args.store}): {report.rows_before:,} rows in {files:,} "
            f"files/commits ({report.duplicates:,} duplicates); labels: {args.labels:,}"
        )
        print(f"point-in-time join before compaction: {'skipped' if before is None else f'{before_s:.1f} s'}")
        print(f"compaction: {compact_s:.1f} s -> {report.files_after} file(s), {report.rows_after:,} rows")
        print(f"point-in-time join after compaction:  {after_s:.1f} s")
        print(f"training sets equal: {'not compared' if before is None else same}")
        if beside:
            print(beside)
        if not same:
            sys.exit(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
