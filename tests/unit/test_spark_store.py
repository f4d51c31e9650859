"""Training sets built by Spark (Feast's Spark offline store over the Delta history, local mode) equal the
DuckDB store's for the same labels, over a history with updates, deletes, re-inserts, a transaction that
changed rows twice at one instant, and labels that fall exactly on a change."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from core.errors import ConfigError
from core.settings import PROJECT_ROOT, load_settings
from stack.spark import ensure_delta_jars
from stores.history.sink import HistorySink
from stores.repository import copy_repo, feast_apply
from stores.sink import DELETE, UPSERT, SinkRow

END = datetime(2026, 11, 1, tzinfo=UTC)
FEATURES = ["customer_profile:credit_limit", "customer_profile:country", "customer_profile:segment"]
SPARK_YAML = """offline_store:
  type: stores.history.spark_store.DeltaSparkOfflineStore
  spark_conf:
    spark.master: local[2]
    spark.ui.enabled: "false"
    spark.sql.shuffle.partitions: "4"
    spark.databricks.delta.snapshotPartitions: "2"
"""


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureStore, FeatureStore, list[datetime]]:
    """One repository, one Delta history, read by both stores: (DuckDB, Spark, the changes' times)."""
    ensure_delta_jars(load_settings())  # fetched by `./dev.sh test` already: a no-op then
    repo = tmp_path_factory.mktemp("spark") / "feature_repo"
    copy_repo(PROJECT_ROOT / "feature_repo", repo)
    feast_apply(repo)
    duck = FeatureStore(repo_path=str(repo))
    rng = np.random.default_rng(7)
    rows, times = [], []
    for version in range(1, 2001):
        customer = int(rng.integers(0, 150))
        when = END - timedelta(seconds=float(rng.uniform(0, 3 * 86400)))
        deleted = rng.random() < 0.12  # deletes, and later upserts of the same customer re-insert it
        features = (
            {}
            if deleted
            else {
                "country": str(rng.choice(["DE", "FR", "GB"])),
                "segment": "gold",
                "credit_limit": float(version),
            }
        )
        rows.append(
            SinkRow(
                "customer_profile",
                DELETE if deleted else UPSERT,
                {"customer_id": customer},
                features,
                when,
                version,
                "d" if deleted else "u",
                "test",
            )
        )
        times.append(when)
    sink = HistorySink(duck)
    for start in range(0, len(rows), 500):  # several Delta commits, as the processor makes them
        sink.add(rows[start : start + 500])
        sink.flush()
        sink.committed()
    # One transaction changing customers 200..249 twice: two changes of one entity with one commit time,
    # in one flush, so one ingestion time too. The second (higher version) is the row's state.
    tx_time = END - timedelta(hours=1)
    sink.add(
        [
            SinkRow(
                "customer_profile",
                UPSERT,
                {"customer_id": customer},
                {"country": "DE", "segment": step, "credit_limit": float(customer * 10 + i)},
                tx_time,
                10_000 + 2 * customer + i,
                "u",
                "test",
            )
            for customer in range(200, 250)
            for i, step in enumerate(["first", "second"])
        ]
    )
    sink.flush()
    sink.committed()
    yaml = (repo / "feature_store.yaml").read_text()
    spark_yaml = repo / "feature_store.spark.yaml"
    spark_yaml.write_text(re.sub(r"offline_store:\n(?:[ #].*\n)+", SPARK_YAML, yaml))
    spark = FeatureStore(repo_path=str(repo), fs_yaml_file=spark_yaml)
    return duck, spark, times


def test_spark_and_duckdb_build_the_same_training_set(
    stores: tuple[FeatureStore, FeatureStore, list[datetime]],
) -> None:
    duck, spark, times = stores
    rng = np.random.default_rng(8)
    labels = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 160, 1500),  # 150..159 never existed: nulls
            "event_timestamp": [END - timedelta(seconds=float(s)) for s in rng.uniform(0, 4 * 86400, 1500)],
        }
    )
    # Labels exactly at a change: the change is in the training set (Feast's join is at-or-before).
    exact = pd.DataFrame({"customer_id": rng.integers(0, 150, 200), "event_timestamp": times[:200]})
    after_tx = pd.DataFrame({"customer_id": range(200, 250), "event_timestamp": END})
    labels = pd.concat([labels, exact, after_tx], ignore_index=True)
    key = ["customer_id", "event_timestamp"]
    want = duck.get_historical_features(entity_df=labels, features=FEATURES).to_df()
    got = spark.get_historical_features(entity_df=labels, features=FEATURES).to_df()
    got["event_timestamp"] = pd.to_datetime(got["event_timestamp"]).dt.tz_localize("UTC")  # Spark: naive UTC
    want = want.sort_values(key).reset_index(drop=True)
    got = got.sort_values(key).reset_index(drop=True)[list(want.columns)]
    assert len(got) == len(labels)  # Feast's Spark join alone: two rows per transaction label
    assert want["credit_limit"].notna().sum() > 500 and want["credit_limit"].isna().sum() > 100
    for training in (want, got):  # the transaction's last change, once (DuckDB's tie was the engine's pick)
        tx = training[training["customer_id"] >= 200]
        assert tx["segment"].eq("second").all() and len(tx) == 50
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_without_delta_jars_the_store_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stores.history.spark_store import DeltaSparkOfflineStoreConfig

    monkeypatch.setenv("FEATURECTL_CACHE_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"featurectl stack install --spark"):
        DeltaSparkOfflineStoreConfig()
    # A spark.jars.packages of the user's own is theirs to resolve; the Delta defaults still apply.
    conf = DeltaSparkOfflineStoreConfig(
        spark_conf={"spark.jars.packages": "io.delta:delta-spark_4.2_2.13:4.4.0", "spark.master": "yarn"}
    ).spark_conf
    assert conf is not None
    assert conf["spark.master"] == "yarn" and "spark.jars" not in conf
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"


def test_with_pyspark_installed_a_python_c_process_importing_great_expectations_runs_on() -> None:
    """Great Expectations imports pyspark.sql.connect when pyspark is installed; without Spark Connect's
    dependencies pyspark then calls sys.exit(0) in a process whose main module is ``-c`` (it takes it for a
    doctest run): every `featurectl process` started that way exited at once, silently, with status 0.
    The spark extra brings those dependencies (pyproject.toml)."""
    done = subprocess.run(
        [sys.executable, "-c", "import pyspark, great_expectations; print('still running')"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "still running", done.stderr[-2000:]
