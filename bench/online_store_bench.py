"""Online stores side by side (every store folder, or --stores), same run.

    .venv/bin/python bench/online_store_bench.py [--rows 20000] [--vectors 10000,100000] [--queries 200] [--stores sqlite,postgres,redis]

Per store: the processor's sink writing ``customer_profile`` rows (batches of 1,000, the processor's
default) against Feast's own ``write_to_online_store`` into the same store (the anchor);
``get_online_features`` p50/p99 for 1 and 100 entities; top-10 similarity p50/p99 over N vectors of
``product_documents`` (SQLite: exact scan; Postgres: HNSW, with its recall@10 against exact; Redis has
no vector search). Starts each store's local server if needed (stores/<name>/server.py) and works in a
namespace of its own there (a schema, a database), dropped at the end.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from bench.common import drop_online_store, store_kind
from core.settings import PROJECT_ROOT, ensure_secrets_file, export_store_secrets, load_settings
from embeddings.spec import spec_for
from stack.launcher import GENERATED_SECRETS
from stores.registry import kinds, open_online_sink
from stores.repository import copy_repo, feast_apply
from stores.sink import UPSERT, SinkRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEATURES = ["customer_profile:segment", "customer_profile:credit_limit", "customer_profile:country"]


def pct(samples: list[float]) -> str:
    a = np.array(samples) * 1000
    return f"{np.percentile(a, 50):6.2f} / {np.percentile(a, 99):6.2f} ms"


def repo(root: Path, name: str, online_yaml: str | None) -> FeatureStore:
    target = root / name / "feature_repo"
    copy_repo(PROJECT_ROOT / "feature_repo", target)
    if online_yaml:
        import re

        path = target / "feature_store.yaml"
        path.write_text(re.sub(r"online_store:\n(?:[ #].*\n)+", online_yaml, path.read_text()))
    feast_apply(target)
    return FeatureStore(repo_path=str(target))


def customer(i: int, version: int) -> SinkRow:
    features = {"country": "GB", "segment": "gold", "credit_limit": float(version), "birth_date": None}
    return SinkRow(
        "customer_profile",
        UPSERT,
        {"customer_id": i},
        features,
        T0 + timedelta(seconds=version),
        version,
        "u",
        "bench",
    )


def sink_rate(store: FeatureStore, rows: int) -> float:
    sink = open_online_sink(store)
    started = time.perf_counter()
    for start in range(0, rows, 1000):
        sink.add([customer(i, start + 10) for i in range(start, min(rows, start + 1000))])
        sink.flush()
    took = time.perf_counter() - started
    sink.close()
    return rows / took


def feast_rate(store: FeatureStore, rows: int) -> float:
    now = pd.Timestamp.now(tz="UTC")
    started = time.perf_counter()
    for start in range(0, rows, 1000):
        ids = range(start, min(rows, start + 1000))
        df = pd.DataFrame(
            {
                "customer_id": list(ids),
                "email": [f"{i:064x}" for i in ids],
                "country": "GB",
                "segment": "silver",
                "credit_limit": 1.0,
                "birth_date": pd.NaT,
                "event_timestamp": now,
                "ingested_at": now,
            }
        )
        store.write_to_online_store("customer_profile", df)
    return rows / (time.perf_counter() - started)


def lookups(store: FeatureStore, n_entities: int, queries: int, population: int) -> str:
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(queries):
        ids = rng.integers(0, population, n_entities).tolist()
        t = time.perf_counter()
        store.get_online_features(features=FEATURES, entity_rows=[{"customer_id": i} for i in ids]).to_dict()
        samples.append(time.perf_counter() - t)
    return pct(samples)


def unit_vectors(n: int, dim: int, seed: int, topics: int = 500) -> np.ndarray:
    """Unit vectors clustered around ``topics`` directions, like text embeddings (uniformly random
    vectors in 384 dimensions are all nearly equidistant: no index finds neighbours among them)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).standard_normal((topics, dim)).astype(np.float32)
    v = centers[rng.integers(0, topics, n)] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@functools.cache
def _topics(topics: int, rank: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """structured_vectors' topic centres and spreads: the same for every seed (base, queries, writers)."""
    shape = np.random.default_rng(0)
    centers = 1.17 * shape.standard_normal((topics, dim)).astype(np.float32)
    return centers, 0.28 * shape.standard_normal((topics, rank, dim)).astype(np.float32)


def structured_vectors(n: int, dim: int, seed: int, topics: int = 500, rank: int = 24) -> np.ndarray:
    """Unit vectors as hard for a nearest-neighbour index as real sentence embeddings: ``topics`` centres,
    each with a ``rank``-dimensional spread of its own plus a little noise in every dimension. Measured
    against the project's model on real sentences (bench/vector_data_bench.py, 100,000 vectors): cosine of
    the 1st/10th/100th nearest 0.74/0.63/0.44 and LID@20 7.3 here, 0.77/0.60/0.48 and 7.4 for the real ones;
    ``unit_vectors`` (isotropic noise around each centre) is far harder (LID@20 ~34) than any text."""
    centers, spreads = _topics(topics, rank, dim)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):  # bounded memory: the gathered spreads are rank x dim per row
        topic = rng.integers(0, topics, min(50_000, n - start))
        z = rng.standard_normal((len(topic), rank)).astype(np.float32)
        v = centers[topic] + np.einsum("nr,nrd->nd", z, spreads[topic])
        v += 0.1 * rng.standard_normal((len(topic), dim)).astype(np.float32)
        out[start : start + len(topic)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def vector_row(product_id: int, vector: np.ndarray, fingerprint: str) -> SinkRow:
    """product_documents' row for ``product_id`` with ``vector``, as the processor's sink receives it."""
    features = {
        "name": f"p{product_id}",
        "description": f"d{product_id}",
        "category": "c",
        "price": 1.0,
        "embedding": vector.tolist(),
    }
    return SinkRow(
        "product_documents", UPSERT, {"product_id": product_id}, features, T0, 10, "u", "bench", fingerprint
    )


def fill_vectors(store: FeatureStore, vectors: np.ndarray, have: int) -> float:
    """Write vectors ``have..len`` as product_documents rows through the sink; seconds taken."""
    spec = spec_for(store.get_feature_view("product_documents"))
    assert spec is not None
    sink = open_online_sink(store)
    started = time.perf_counter()
    for start in range(have, len(vectors), 1000):
        batch = [
            vector_row(i, vectors[i], spec.fingerprint) for i in range(start, min(len(vectors), start + 1000))
        ]
        sink.add(batch)
        sink.flush()
    took = time.perf_counter() - started
    sink.close()
    return took


def similarity(
    store: FeatureStore,
    vectors: np.ndarray,
    queries: int | np.ndarray,
    added: Callable[[], tuple[np.ndarray, int]] | None = None,
) -> tuple[str, float]:
    """top-10 p50/p99 and recall@10 against an exact numpy search; ``queries``: a count of synthetic
    query vectors, or the query vectors themselves. Product i holds ``vectors[i]``; ``added``, when vectors
    are being written meanwhile, returns those written so far and the first one's product id (the exact
    search includes those written before each query's answer, so one written during a query counts as missed
    if it belongs: conservative).

    The queries run back to back and the exact search comes after them all: interleaved, each query ran
    after a pass over every vector (1.5 GB at a million), which evicted the index from the CPU's caches and
    the server's buffers and measured the bench instead of the store (2-3x the p50 at a million)."""
    qs = unit_vectors(queries, vectors.shape[1], 99) if isinstance(queries, int) else queries
    samples, answers, known = [], [], []
    for q in qs:
        t = time.perf_counter()
        got = store.retrieve_online_documents_v2(
            features=["product_documents:name"], query=q.tolist(), top_k=10
        ).to_dict()
        samples.append(time.perf_counter() - t)
        answers.append(set(got["product_id"]))
        known.append(added() if added is not None else None)
    recall = []
    for q, answer, written in zip(qs, answers, known, strict=True):
        scores, ids = vectors @ q, np.arange(len(vectors))
        if written is not None:
            more, first_id = written
            scores = np.concatenate([scores, more @ q])
            ids = np.concatenate([ids, first_id + np.arange(len(more))])
        exact = set(ids[np.argsort(-scores)[:10]].tolist())
        recall.append(len(exact & answer) / 10)
    return pct(samples), float(np.mean(recall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--vectors", default="10000,100000", help="vector counts, ascending")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--stores",
        default=",".join(k.name for k in kinds()),
        help="store folders to compare, comma-separated (default: %(default)s)",
    )
    args = parser.parse_args()
    settings = load_settings()
    ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    names = args.stores.split(",")
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    blocks: dict[str, str | None] = {}
    for name in names:
        kind = store_kind(name)
        if kind.local is None:
            blocks[name] = None  # the repo's own
            continue
        server = kind.server(settings)
        server.start()
        server.bootstrap()
        blocks[name] = server.online_store(namespace)
    export_store_secrets(settings)
    root = Path(tempfile.mkdtemp(prefix="online-bench-"))
    try:
        stores = {name: repo(root, name, blocks[name]) for name in names}
        print(f"command: {shlex.join([sys.executable, *sys.argv])}")
        labels = {name: store_kind(name).label for name in names}
        print(f"{'':<44}" + "".join(f"{labels[n]:>22}" for n in names))

        def line(label: str, cells: dict[str, str]) -> None:
            print(f"{label:<44}" + "".join(f"{cells.get(k, 'n/a'):>22}" for k in names))

        def guarded(measure: Callable[[FeatureStore], str]) -> dict[str, str]:
            out = {}
            for k, v in stores.items():
                try:
                    out[k] = measure(v)
                except Exception as exc:  # a store failing one measure still shows the others
                    print(f"{k}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
                    out[k] = "failed"
            return out

        line("processor sink (rows/s, batches of 1000)", guarded(lambda v: f"{sink_rate(v, args.rows):,.0f}"))
        line("Feast write_to_online_store (anchor)", guarded(lambda v: f"{feast_rate(v, args.rows):,.0f}"))
        for n in (1, 100):
            line(
                f"get_online_features {n} entities p50/p99",
                guarded(lambda v, n=n: lookups(v, n, args.queries, args.rows)),  # type: ignore[misc]
            )
        for name in names:
            if store_kind(name).vectors is None:
                del stores[name]  # no vector search
        vectors = unit_vectors(max(int(x) for x in args.vectors.split(",")), 384, 7)
        have = 0
        for n in sorted(int(x) for x in args.vectors.split(",")):
            took = {k: f"{fill_vectors(v, vectors[:n], have):.1f}" for k, v in stores.items()}
            have = n
            result = {k: similarity(v, vectors[:n], min(args.queries, 100)) for k, v in stores.items()}
            line(f"vectors written {have:,} (s, incl. index)", took)
            line(
                f"top-10 of {n:,} p50/p99 (recall@10)", {k: f"{r[0]} ({r[1]:.2f})" for k, r in result.items()}
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for name in names:
            drop_online_store(settings, name, namespace)


if __name__ == "__main__":
    main()
