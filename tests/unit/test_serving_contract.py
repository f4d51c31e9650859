"""`featurectl serve` answers as Feast's feature server does: generated requests (plain lookups, duplicates,
missing entities, unknown features and views, wrong key types, extra fields, missing or extra keys, malformed
JSON, another content type) go to our server and to Feast's own app over the same repository and store, and the
status codes and bodies must be equal. Feast orders a view's features by a Python set (the order changes with
the process's hash seed), so a 200 body is compared as its set of columns; every other body byte for byte (both
servers with one hash seed).
On every online store, with values of every kind the repository declares, ttl-expired ones included."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from feast import FeatureStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.ports import free_port
from serving.feature_server import FeatureServer
from stores.registry import open_online_sink
from stores.sink import UPSERT, SinkRow

CUSTOMERS = range(1, 41)  # ids 41.. are never written: NOT_FOUND
PRODUCTS = range(1, 21)
TTL = timedelta(hours=1)

REFS = [
    "customer_profile:segment",
    "customer_profile:credit_limit",
    "customer_profile:country",
    "customer_profile:birth_date",
    "customer_profile:email",
    "product_details:name",
    "product_details:price",
    "product_details:in_stock",
    "product_details:tags",
    "order_status:status",
    "customer_profile:nope",  # unknown feature
    "nope:segment",  # unknown view
    "segment",  # not a reference
]
KEYS = ["customer_id", "product_id", "order_id", "nobody"]


def _fill(store: FeatureStore) -> None:
    """Customers (floats with NaN and None, timestamps, strings with non-ASCII) some older than their view's
    ttl, and products (bools, string arrays), written by the processor's sink. Ages count from now, the test's
    start, and stay >= 5 minutes from the ttl for the test's duration: the two servers read at different
    instants, so a value crossing the boundary between them would differ for a reason of time, not of code."""
    # A fraction of a second every store keeps (microseconds): event times are part of the answer, to the microsecond.
    now = datetime.now(UTC).replace(microsecond=654321)
    rows = []
    for i in CUSTOMERS:
        limit: float | None = [1.5, float("nan"), None, -0.0, 1e300, 123456789.125][i % 6]
        when = now - (TTL + timedelta(minutes=5) if i % 4 == 0 else timedelta(minutes=i))
        features = {
            "country": ["DE", "FR", None, "日本"][i % 4],
            "segment": "gold" if i % 2 else "silver",
            "credit_limit": limit,
            "birth_date": datetime(1980, 1, 1, tzinfo=UTC) + timedelta(days=i) if i % 5 else None,
            "email": f"h{i}",
        }
        rows.append(SinkRow("customer_profile", UPSERT, {"customer_id": i}, features, when, i, "u", "t"))
    for i in PRODUCTS:
        features = {
            "name": f"p{i}",
            "description": f"product {i}",
            "category": "c",
            "price": i * 0.5,
            "in_stock": i % 2 == 0,
            "tags": ["a", "b"] if i % 3 else [],
        }
        rows.append(SinkRow("product_details", UPSERT, {"product_id": i}, features, now, i, "u", "t"))
    sink = open_online_sink(store)
    try:
        sink.add(rows)
        sink.flush()
    finally:
        sink.close()


@pytest.fixture
def servers(
    fresh_store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """Our server (two worker processes on one port) and Feast's own app (FEAST_SERVE_LOOKUPS=feast) over the
    store's repository, customer_profile
    with a ttl (expired values are part of the answer). One hash seed for both: Feast builds some error messages
    from sets, so two Feast servers with different seeds word them differently."""
    monkeypatch.setenv("PYTHONHASHSEED", "47")
    view = fresh_store.get_feature_view("customer_profile")
    view.ttl = TTL
    fresh_store.apply([view])
    _fill(fresh_store)
    repo = Path(str(fresh_store.repo_path))
    ours = FeatureServer(repo, "127.0.0.1", free_port(), log=tmp_path / "ours.log", workers=2)
    feasts = FeatureServer(repo, "127.0.0.1", free_port(), log=tmp_path / "feast.log", lookups="feast")
    try:
        ours.start()
        feasts.start()
        assert len(ours.procs) == 2 and all(ours._listening(p) for p in ours.procs), (
            "both workers on the port"
        )
        yield ours.url, feasts.url
    finally:
        ours.stop()
        feasts.stop()
        view.ttl = timedelta(0)
        fresh_store.apply([view])


KEY_VALUES = st.one_of(
    st.sampled_from([*CUSTOMERS[:10], 41, 99]),  # present (some expired) and absent
    st.integers(min_value=-(2**64), max_value=2**64),  # out of int64 range too
    st.sampled_from(["7", "a", "", 1.5, 2.0, True, None, [1], {"a": 1}]),
)


@st.composite
def plain(draw: st.DrawFn) -> dict[str, Any]:
    """A lookup as a model service makes it: features of one or two views, their keys, ids present or not."""
    customers, products = REFS[:5], REFS[5:9]
    pick = draw(st.sampled_from(["customer", "product", "both", "service"]))
    rows = draw(st.integers(1, 120))
    if pick == "service":  # a feature service (feature_repo/feature_services.py): its lookups are also logged
        ids = st.lists(st.integers(0, 45), min_size=rows, max_size=rows)
        service: dict[str, Any] = {
            "feature_service": "purchase_model",
            "entities": {"customer_id": draw(ids), "product_id": draw(ids)},
        }
        if draw(st.booleans()):
            service["full_feature_names"] = draw(st.booleans())
        return service
    pool = {"customer": customers, "product": products, "both": customers + products}[pick]
    ids = st.lists(st.integers(0, 45), min_size=rows, max_size=rows)
    keys = {"customer": ["customer_id"], "product": ["product_id"], "both": ["customer_id", "product_id"]}[
        pick
    ]
    body: dict[str, Any] = {
        "features": draw(st.lists(st.sampled_from(pool), min_size=1, max_size=6, unique=True)),
        "entities": {k: draw(ids) for k in keys},
    }
    if draw(st.booleans()):
        body["full_feature_names"] = draw(st.booleans())
    return body


@st.composite
def odd(draw: st.DrawFn) -> dict[str, Any]:
    """Anything near a lookup: unknown references, wrong or missing keys, values of other types, extra fields."""
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        body["features"] = draw(st.lists(st.sampled_from(REFS), max_size=5))
    rows = draw(st.integers(0, 4))
    if draw(st.integers(0, 9)):
        keys = draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True))
        body["entities"] = {
            k: draw(
                st.lists(KEY_VALUES, min_size=rows, max_size=rows + (0 if draw(st.integers(0, 4)) else 1))
            )
            for k in keys
        }
    if draw(st.booleans()):
        body["full_feature_names"] = draw(st.sampled_from([True, False, "yes", 1]))
    if not draw(st.integers(0, 4)):
        extra = draw(st.sampled_from(["include_feature_view_version_metadata", "feature_service", "other"]))
        body[extra] = draw(st.sampled_from([True, False, None, "customer_service", "purchase_model", 7]))
    return body


@st.composite
def lookup(draw: st.DrawFn) -> tuple[bytes, str]:
    """A request body and its content type: mostly a plain lookup, else an odd one; sometimes malformed."""
    body = draw(plain()) if draw(st.sampled_from([True, True, True, False])) else draw(odd())
    raw = json.dumps(body).encode()
    if not draw(st.integers(0, 14)):
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]  # malformed JSON
    kind = "application/json" if draw(st.integers(0, 14)) else draw(st.sampled_from(["text/plain", ""]))
    return raw, kind


# An aggregation view's values are computed at read time and carry that instant as their event time: the two
# servers read at different instants (the values themselves must agree).
AGGREGATED = {"orders_24h", "spent_7d", "last_statuses"}


def _normal(response: requests.Response) -> tuple[int, Any]:
    """Status and body; a 200 body as the sorted list of its columns (Feast's column order is arbitrary)."""
    if response.status_code != 200:
        return response.status_code, response.content
    body = response.json()
    for name, result in zip(body["metadata"]["feature_names"], body["results"], strict=True):
        if name.rsplit("__", 1)[-1] in AGGREGATED:
            result["event_timestamps"] = ["<read time>"] * len(result["event_timestamps"])
    columns = [
        json.dumps([name, result], sort_keys=True)
        for name, result in zip(body["metadata"]["feature_names"], body["results"], strict=True)
    ]
    return 200, (sorted(columns), sorted(k for k in body if k not in ("results", "metadata")))


def _post(url: str, raw: bytes, kind: str) -> requests.Response:
    headers = {"Content-Type": kind} if kind else {}
    return requests.post(f"{url}/get-online-features", data=raw, headers=headers, timeout=30)


def test_feature_server_answers_as_feasts_own(servers: tuple[str, str]) -> None:
    ours, feasts = servers
    # The plain request of the README, a 100-entity one, and one with expired and absent values.
    plain = json.dumps(
        {
            "features": REFS[:5],
            "entities": {"customer_id": [*CUSTOMERS, 41, 1, 4]},
            "full_feature_names": True,
        }
    ).encode()
    answered = _post(ours, plain, "application/json")
    theirs = _post(feasts, plain, "application/json")
    assert _normal(answered) == _normal(theirs)
    statuses = {s for r in answered.json()["results"] for s in r["statuses"]}
    assert {"PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"} <= statuses, "the corpus covers every status"
    assert any(
        isinstance(v, float) and math.isfinite(v) for r in answered.json()["results"] for v in r["values"]
    )

    seen: dict[int, int] = {}

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(lookup())
    def check(request: tuple[bytes, str]) -> None:
        raw, kind = request
        got, want = _normal(_post(ours, raw, kind)), _normal(_post(feasts, raw, kind))
        assert got == want, f"request {raw!r} ({kind or 'no content type'})"
        seen[got[0]] = seen.get(got[0], 0) + 1

    check()
    # The corpus reached both paths: answers (ours) and Feast's refusals of several kinds.
    print(f"answers by status: {seen}")
    assert seen.get(200, 0) >= 50 and len(seen) >= 3, seen
