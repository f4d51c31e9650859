"""Every store plugin is a Feast store: Feast's own writes (``write_to_online_store``, ``push``, ``materialize``)
land where the plugin's reader finds them, as on Feast's built-in store of the same kind (the oracle: same
writes, same reads; ``feasts_own`` says which). Inputs are generated: NULLs, several changes of one entity in
a batch, in and out of time order, any float, any timestamp."""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from feast import FeatureStore
from feast.data_source import PushMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import PROJECT_ROOT
from stores.history.sink import HistorySink
from stores.registry import kind_of, kinds
from stores.repository import copy_repo, feast_apply
from stores.sink import UPSERT, SinkRow
from tests.conftest import LocalStore, without_aggregation_views

VIEW = "customer_profile"
COLUMNS = ("country", "segment", "credit_limit", "birth_date", "email")
FEATURES = [f"{VIEW}:{c}" for c in COLUMNS]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
_IDS = itertools.count(1_000_000)  # entities of their own per example: the stores are emptied per test only

RUNS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _repo_on(root: Path, block: str) -> FeatureStore:
    copy_repo(PROJECT_ROOT / "feature_repo", root)
    path = root / "feature_store.yaml"
    path.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", block, path.read_text()))
    without_aggregation_views(root)  # Feast's own stores serve them as plain views: not what is compared
    feast_apply(root)
    return FeatureStore(repo_path=str(root))


@pytest.fixture(scope="module")
def feasts_own(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, FeatureStore]:
    """The oracle of each plugin: Feast's built-in store its folder answers to (``type: sqlite``, ``postgres``,
    ``redis``, on the same server, another namespace), or Feast's SQLite where Feast's own reads NULLs wrong
    (Milvus: stores/milvus/layout.py)."""
    out = {}
    for kind in kinds():
        builtin = next((t for t in kind.types if "." not in t), None)
        root = tmp_path_factory.mktemp(f"oracle-{kind.name}") / "feature_repo"
        if builtin is None or kind.local is None:
            out[kind.name] = _repo_on(root, "online_store:\n  type: sqlite\n  path: data/feast_sqlite.db\n")
            continue
        local: LocalStore = request.getfixturevalue(f"local_{kind.name}")
        local.empty("oracle")
        block = re.sub(r"type: \S+", f"type: {builtin}", local.yaml("oracle"), count=1)
        out[kind.name] = _repo_on(root, block)
    return out


@pytest.fixture
def oracle(fresh_store: FeatureStore, feasts_own: dict[str, FeatureStore]) -> FeatureStore:
    return feasts_own[kind_of(fresh_store).name]


maybe = st.one_of
values = st.fixed_dictionaries(
    {
        "country": maybe(st.none(), st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)),
        "segment": st.sampled_from([None, "gold", "silver", "", "bronze é"]),
        "credit_limit": maybe(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "birth_date": maybe(
            st.none(),
            st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1)).map(
                lambda d: d.replace(microsecond=0, tzinfo=UTC)
            ),
        ),
        # No NUL: Postgres's text refuses it (Feast's own postgres store fails the same way), and no source
        # row holds one; test_a_refused_write_leaves_the_store_usable covers the refusal.
        "email": maybe(
            st.none(),
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
        ),
    }
)
# (entity index, seconds after T0, values): several changes per entity, each at its own instant.
changes = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 10_000), values),
    min_size=1,
    max_size=12,
    unique_by=lambda c: c[1],
)


def frame(batch: list[tuple[int, int, dict[str, Any]]], ids: list[int]) -> pd.DataFrame:
    rows = [
        {"customer_id": ids[e], **v, "event_timestamp": T0 + timedelta(seconds=s), "ingested_at": T0}
        for e, s, v in batch
    ]
    df = pd.DataFrame(rows)
    df["birth_date"] = pd.to_datetime(df["birth_date"], utc=True)
    return df


def read(store: FeatureStore, ids: list[int]) -> dict[str, list[Any]]:
    """What get_online_features answers, values and event times, NaN as a string (NaN != NaN)."""
    answer = store.get_online_features(features=FEATURES, entity_rows=[{"customer_id": i} for i in ids])
    out = answer.to_dict(include_event_timestamps=True)
    return {k: ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in vs] for k, vs in out.items()}


def latest(batch: list[tuple[int, int, dict[str, Any]]], ids: list[int]) -> dict[int, dict[str, Any]]:
    """The model of materialize: each entity's change with the latest event time."""
    out: dict[int, tuple[int, dict[str, Any]]] = {}
    for e, s, v in batch:
        if ids[e] not in out or s > out[ids[e]][0]:
            out[ids[e]] = (s, v)
    return {i: v for i, (_, v) in out.items()}


@RUNS
@given(batch=changes)
def test_write_to_online_store_reads_back_as_on_feasts_own_store(
    fresh_store: FeatureStore, oracle: FeatureStore, batch: list[tuple[int, int, dict[str, Any]]]
) -> None:
    ids = [next(_IDS) for _ in range(4)]
    for store in (fresh_store, oracle):
        store.write_to_online_store(VIEW, frame(batch, ids))
    assert read(fresh_store, ids) == read(oracle, ids)


@RUNS
@given(first=changes, then=changes)
def test_push_reads_back_as_on_feasts_own_store(
    fresh_store: FeatureStore,
    oracle: FeatureStore,
    first: list[tuple[int, int, dict[str, Any]]],
    then: list[tuple[int, int, dict[str, Any]]],
) -> None:
    """Two pushes: the second's changes of an entity replace the first's where they are later, as on Feast's."""
    ids = [next(_IDS) for _ in range(4)]
    for batch in (first, then):
        for store in (fresh_store, oracle):
            store.push(f"{VIEW}_push", frame(batch, ids), to=PushMode.ONLINE)
    assert read(fresh_store, ids) == read(oracle, ids)


def test_materialize_writes_the_latest_change_of_each_entity(fresh_store: FeatureStore) -> None:
    """Feast's ``materialize`` reads the history (the offline plugin) and writes the plugin's online store."""
    ids = [next(_IDS) for _ in range(3)]
    batch = [
        (0, 10, {"country": "DE", "segment": "gold", "credit_limit": 1.5}),
        (0, 20, {"country": "FR", "segment": None, "credit_limit": None}),
        (1, 5, {"country": None, "segment": "silver", "credit_limit": -0.0}),
        (2, 30, {"country": "GB", "segment": "", "credit_limit": 1e300}),
    ]
    rows = [
        SinkRow(
            VIEW, UPSERT, {"customer_id": ids[e]}, {**v, "birth_date": None, "email": None},
            T0 + timedelta(seconds=s), n + 1, "u", f"t[0] offset={n}", position=("t", 0, n),
        )
        for n, (e, s, v) in enumerate(batch)
    ]  # fmt: skip
    sink = HistorySink(fresh_store, "test")
    sink.add(rows)
    sink.flush()
    fresh_store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=1), feature_views=[VIEW])
    got = read(fresh_store, ids)
    model = latest(batch, ids)
    for column in ("country", "segment", "credit_limit"):
        assert got[column] == [model[i][column] for i in ids], column
    assert got["country__ts"] == [int((T0 + timedelta(seconds=s)).timestamp()) for s in (20, 5, 30)]


def test_the_oracles_are_feasts_own_stores(feasts_own: dict[str, FeatureStore]) -> None:
    for name, store in feasts_own.items():
        module = type(store._get_provider().online_store).__module__
        assert module.startswith("feast.infra.online_stores."), (name, module)


def test_a_refused_write_leaves_the_store_usable(fresh_store: FeatureStore) -> None:
    """A write the store refuses (Postgres: a NUL in a string) fails alone: the next write and read work."""
    ids = [next(_IDS) for _ in range(4)]
    bad = [
        (
            0,
            1,
            {"country": "DE", "segment": "gold", "credit_limit": 1.0, "birth_date": None, "email": "a\x00b"},
        )
    ]
    try:
        fresh_store.write_to_online_store(VIEW, frame(bad, ids))
    except Exception as exc:  # refused, or stored: either way what follows must work
        assert "NUL" in str(exc), exc
    good = [
        (1, 2, {"country": "FR", "segment": "silver", "credit_limit": 2.0, "birth_date": None, "email": "b"})
    ]
    fresh_store.write_to_online_store(VIEW, frame(good, ids))
    assert read(fresh_store, ids)["segment"][1] == "silver"
