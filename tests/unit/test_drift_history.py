"""Drift checks over a real Delta history written by the history sink: the windows read, deletes left out,
each kind of reference (a rolling window, a Feast saved dataset), and the verdicts that follow."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

from core.errors import ConfigError
from core.settings import PROJECT_ROOT
from monitoring.drift.report import check_view
from stores.history.sink import HistorySink
from stores.repository import copy_repo, feast_apply
from stores.sink import DELETE, UPSERT, SinkRow
from validation.drift_spec import Reference, drift_spec

END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """customer_profile's history: 30 days of credit limits around 1,000, then a last day around 3,000,
    and 500 deletes in the last day (tombstones: never a value)."""
    root = tmp_path_factory.mktemp("drift")
    copy_repo(PROJECT_ROOT / "feature_repo", root / "feature_repo")
    feast_apply(root / "feature_repo")
    fs = FeatureStore(repo_path=str(root / "feature_repo"))
    sink = HistorySink(fs)
    rng = np.random.default_rng(3)

    def rows(n: int, start: datetime, span: timedelta, mean: float, first: int) -> list[SinkRow]:
        offsets = np.sort(rng.uniform(0, span.total_seconds(), n))
        return [
            SinkRow(
                "customer_profile",
                UPSERT,
                {"customer_id": first + i},
                {
                    "country": rng.choice(["DE", "FR"]),
                    "segment": "gold",
                    "credit_limit": float(rng.normal(mean, 100)),
                },
                start + timedelta(seconds=float(o)),
                first + i,
                "c",
                "bench",
            )
            for i, o in enumerate(offsets)
        ]

    sink.add(rows(3000, END - timedelta(days=31), timedelta(days=30), 1000, 0))
    sink.add(rows(1000, END - timedelta(days=1), timedelta(days=1), 3000, 10_000))
    deletes = [
        SinkRow(
            "customer_profile", DELETE, {"customer_id": i}, {}, END - timedelta(hours=1), 20_000 + i, "d", "b"
        )
        for i in range(500)
    ]
    sink.add(deletes)
    sink.flush()
    sink.committed()
    return fs


def test_a_shifted_day_drifts_against_the_rolling_window_and_deletes_are_not_values(
    store: FeatureStore,
) -> None:
    view = store.get_feature_view("customer_profile")
    report, _, _ = check_view(store, view, drift_spec(view), END)
    assert (report.reference_rows, report.current_rows) == (3000, 1000)  # the 500 tombstones are not rows
    assert report.drifting == ["credit_limit"]
    assert report.null_ratio["credit_limit"] == 0.0
    verdicts = {(s.feature, s.metric): s.verdict for s in report.scores}
    assert verdicts[("country", "jensen_shannon")] == "ok"

    # The same 30 days checked one day earlier: the window is the reference's own distribution.
    calm, _, _ = check_view(store, view, drift_spec(view), END - timedelta(days=1))
    assert calm.current_rows > 50 and calm.drifting == []


def test_a_saved_dataset_is_a_reference(store: FeatureStore, tmp_path: Path) -> None:
    view = store.get_feature_view("customer_profile")
    labels = pd.DataFrame(
        {"customer_id": range(0, 3000, 3), "event_timestamp": [END - timedelta(days=1)] * 1000}
    )
    job = store.get_historical_features(labels, ["customer_profile:credit_limit", "customer_profile:country"])
    store.create_saved_dataset(
        from_=job, name="train_oct", storage=SavedDatasetFileStorage(path=str(tmp_path / "train.parquet"))
    )
    spec = replace(drift_spec(view), reference=Reference("training", dataset="train_oct"))
    report, _, _ = check_view(store, view, spec, END)
    assert report.reference_rows == 1000 and report.reference == "saved dataset train_oct"
    assert report.drifting == ["credit_limit"]

    missing = replace(spec, reference=Reference("training", dataset="nope"))
    with pytest.raises(ConfigError, match="no saved dataset 'nope'"):
        check_view(store, view, missing, END)


def test_a_baseline_reference_needs_feasts_baseline(store: FeatureStore) -> None:
    view = store.get_feature_view("customer_profile")
    spec = replace(drift_spec(view), reference=Reference("baseline"))
    with pytest.raises(ConfigError, match="feast monitor run --set-baseline"):
        check_view(store, view, spec, END)
