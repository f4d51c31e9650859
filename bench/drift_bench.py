"""What a drift check costs on a long history, against Feast's own monitoring over the same rows.

History as in bench/pit_bench.py (customer_profile, ``--history`` changes over 90 days, Delta commits of
``--batch`` rows); then ``featurectl drift``'s check of the last ``--window`` against the 30 days before
it (reading both samples, scoring every feature), timed; and, the anchor, Feast's
``compute_monitoring_metrics`` (what ``feast monitor run`` computes: counts, moments, percentiles,
histograms) for the same two ranges through the same offline store. No stack needed.

    .venv/bin/python -m bench.drift_bench --history 10000000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from feast import FeatureStore

from bench.pit_bench import T0, history
from core.settings import PROJECT_ROOT
from monitoring.drift.report import check_view
from stores.history.duckdb_store import DeltaDuckDBOfflineStore
from stores.repository import copy_repo, feast_apply
from validation.drift_spec import drift_spec, parse_duration


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--history", type=int, default=1_000_000, help="changes over 90 days")
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000, help="rows per Delta commit (a micro-batch)")
    parser.add_argument("--window", default="1d", help="the current window, ending at the history's end")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    try:
        copy_repo(PROJECT_ROOT / "feature_repo", root / "feature_repo")
        repo = root / "feature_repo"
        feast_apply(repo)
        store = FeatureStore(repo_path=str(repo))
        files = history(store, args.history, args.entities, args.batch, dup=0.0)
        view = store.get_feature_view("customer_profile")
        spec = drift_spec(view)
        spec = replace(spec, window=parse_duration(args.window, "--window"))
        end = T0 + timedelta(days=90)

        start = time.perf_counter()
        report, _, _ = check_view(store, view, spec, end)
        drift_s = time.perf_counter() - start

        # Feast's monitoring has numbers and categories only (no vectors).
        columns = [(n, k) for n, k in report.kinds.items() if k in ("numeric", "categorical")]
        source = view.batch_source
        assert source is not None
        start = time.perf_counter()
        for lo, hi in ((end - spec.window, end), (end - spec.window - timedelta(days=30), end - spec.window)):
            DeltaDuckDBOfflineStore.compute_monitoring_metrics(
                store.config, source, columns, "event_timestamp", lo, hi
            )
        feast_s = time.perf_counter() - start

        scored = sum(1 for s in report.scores if s.score is not None)
        print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.drift_bench', *sys.argv[1:]])}")
        print(f"history: {args.history:,} changes over 90 days in {files:,} Delta commits")
        print(
            f"drift check: {report.current_rows:,} current + {report.reference_rows:,} reference rows, "
            f"{scored} scores, {drift_s:.2f} s ({(report.current_rows + report.reference_rows) / drift_s:,.0f} rows/s); "
            f"drifting: {', '.join(report.drifting) or 'none'}"
        )
        print(
            f"Feast compute_monitoring_metrics, same two ranges (anchor): {feast_s:.2f} s ({drift_s / feast_s:.2f}x)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
