"""Pinned training sets (stores/history/datasets.py): a set saved today is rebuilt bit for bit after new changes
(late ones too, inside its time range), compaction and a vacuum removed the files it was read from; a changed
view is refused, naming it; drift reads the set as its training reference; drop releases it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from jobs.compact import compact
from monitoring.drift.samples import _saved_dataset
from stores.history import datasets
from stores.history.reader import History
from tests.unit.test_served_log import Writer, customer, product

FEATURES = [
    "customer_profile:segment",
    "customer_profile:credit_limit",
    "product_details:price",
    "product_details:in_stock",
]
DAY0 = datetime(2026, 11, 1, tzinfo=UTC)


LATE = DAY0 + timedelta(days=3)  # when a late batch changes every customer and product (module test)
# Entity rows just after LATE: the late batch decides their values.
AFTER_LATE = [(c, 1 + c % 10, 3 * 86_400 + 1, c % 2 == 0) for c in range(1, 31)]


def _history(writer: Writer, rng: random.Random, days: int, flushes: int) -> None:
    """Changes of 30 customers and 10 products over ``days`` days, in ``flushes`` appends (many small files)."""
    for _ in range(flushes):
        when = DAY0 + timedelta(days=rng.randrange(days), seconds=rng.randrange(86_400))
        rows = [customer(rng.randint(1, 30), round(rng.uniform(0, 1000), 2), rng.choice(["gold", "silver"]))]
        rows += [product(rng.randint(1, 10), round(rng.uniform(1, 50), 2))]
        writer.write(rows, when)


@pytest.fixture
def store(sqlite_store: FeatureStore) -> FeatureStore:
    for name in datasets.names(sqlite_store):
        datasets.drop(sqlite_store, name)
    return sqlite_store


ENTITIES = st.lists(
    st.tuples(st.integers(1, 32), st.integers(1, 11), st.integers(0, 6 * 86_400), st.booleans()),
    min_size=1,
    max_size=60,
)


def test_a_saved_set_is_rebuilt_bit_for_bit_after_new_changes_compaction_and_vacuum(
    store: FeatureStore,
) -> None:
    writer = Writer(store)
    rng = random.Random(7)
    _history(writer, rng, days=6, flushes=40)
    runs = 0

    @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @example(AFTER_LATE)
    @given(ENTITIES)
    def check(rows: list[tuple[int, int, int, bool]]) -> None:
        nonlocal runs
        runs += 1
        name = f"train{runs}"
        entities = pd.DataFrame(
            {
                "customer_id": [r[0] for r in rows],
                "product_id": [r[1] for r in rows],
                "event_timestamp": [DAY0 + timedelta(seconds=r[2]) for r in rows],
                "label": [r[3] for r in rows],
            }
        )
        manifest = datasets.save(store, name, entities, FEATURES)
        directory = datasets.datasets_dir(store) / name
        saved = pq.read_table(directory / "data.parquet")
        assert manifest["rows"] == len(rows) == saved.num_rows
        assert datasets.content_hash(saved) == manifest["content_sha256"]
        pinned = {
            v: [Path(manifest["views"][v]["history"]) / f["file"] for f in manifest["views"][v]["files"]]
            for v in manifest["views"]
        }
        assert all(pinned.values())

        # The history moves on: late changes inside the set's time range (one batch changing every customer and
        # product at LATE), then every view compacted and vacuumed.
        _history(writer, rng, days=6, flushes=15)
        writer.write(
            [customer(c, 1.0, "platinum") for c in range(1, 31)] + [product(p, 99.0) for p in range(1, 11)],
            LATE,
        )
        for view in ("customer_profile", "product_details"):
            report = compact(store, store.get_feature_view(view), keep_s=0)
            assert report.vacuumed > 0
        gone = [p for files in pinned.values() for p in files if not p.exists()]
        assert gone, "compaction removed files the set was read from"
        live = datasets._join(store, entities, FEATURES, False, {})
        _, rebuilt = datasets.rebuild(store, name)
        assert rebuilt.sha256 == manifest["content_sha256"]
        assert rebuilt.table.equals(saved)
        # The same query over today's history gives another set when a late change reached its rows.
        changed = not live.table.equals(saved)
        print(
            f"{name}: {len(rows)} rows, live join {'differs' if changed else 'unchanged'}, {len(gone)} files gone"
        )

    check()
    # Drift reads a saved set as its training reference.
    reference = _saved_dataset(store, store.get_feature_view("customer_profile"), "train1")
    assert reference.num_rows > 0 and "credit_limit" in reference.column_names
    # Dropping releases the pins and the registry's entry.
    directory = datasets.datasets_dir(store) / "train1"
    assert datasets.drop(store, "train1") > 0 and not directory.exists()
    with pytest.raises(Exception, match="train1"):
        store.registry.get_saved_dataset("train1", store.project, allow_cache=False)
    with pytest.raises(ConfigError, match="no saved dataset train1"):
        datasets.rebuild(store, "train1")


def test_a_set_whose_view_changed_is_refused_naming_the_view(store: FeatureStore) -> None:
    writer = Writer(store)
    _history(writer, random.Random(3), days=2, flushes=5)
    entities = pd.DataFrame(
        {"customer_id": [1, 2], "product_id": [1, 2], "event_timestamp": [DAY0 + timedelta(days=3)] * 2}
    )
    datasets.save(store, "before", entities, FEATURES)
    with pytest.raises(ConfigError, match="dataset before exists"):
        datasets.save(store, "before", entities, FEATURES)
    view = store.get_feature_view("product_details")
    view.ttl = timedelta(days=1)  # a join over another ttl is another set
    store.apply([view])
    try:
        with pytest.raises(ConfigError, match="view product_details changed since the set was saved"):
            datasets.rebuild(store, "before")
    finally:
        view.ttl = timedelta(0)
        store.apply([view])
    _, built = datasets.rebuild(store, "before")
    assert built.sha256 == datasets.load(store, "before")[1]["content_sha256"]
    assert History(store, store.get_feature_view("customer_profile")).files()
