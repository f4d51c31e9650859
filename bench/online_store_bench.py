"""Online stores side by side: SQLite (+ sqlite-vec), Postgres (+ pgvector HNSW) and Redis, same run.

    .venv/bin/python bench/online_store_bench.py [--rows 20000] [--vectors 10000,100000] [--queries 200]

Per store: the processor's sink writing ``customer_profile`` rows (batches of 1,000, the processor's
default) against Feast's own ``write_to_online_store`` into the same store (the anchor);
``get_online_features`` p50/p99 for 1 and 100 entities; top-10 similarity p50/p99 over N vectors of
``product_documents`` (SQLite: exact scan; Postgres: HNSW, with its recall@10 against exact; Redis has
no vector search). Starts the local online-store Postgres and Redis if needed (`featurectl stack up
--with online-postgres --with redis`); works in a Postgres schema and a Redis database of its own.
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
import psycopg
from feast import FeatureStore
from psycopg import sql

from core.settings import (
    PROJECT_ROOT,
    Settings,
    ensure_secrets_file,
    export_store_secrets,
    load_settings,
)
from embeddings.spec import spec_for
from stack.launcher import GENERATED_SECRETS
from stack.online_postgres import OnlinePostgres
from stack.redis import RedisServer
from stores.registry import open_online_sink
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


def pg_schema(settings: Settings, online: OnlinePostgres) -> tuple[str, str]:
    """A fresh schema in the online-store Postgres, and the online_store YAML that writes into it."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(online.store_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema, pg_yaml(settings, schema)


def pg_yaml(settings: Settings, schema: str) -> str:
    """The online_store YAML that writes into ``schema`` of the online-store Postgres."""
    s = settings
    return (
        "online_store:\n  type: stores.postgres.feast.PgVectorOnlineStore\n"
        f"  host: 127.0.0.1\n  port: {s.online_pg_port}\n  database: {s.online_pg_database}\n  db_schema: {schema}\n"
        f"  user: {s.online_pg_user}\n  password: ${{FEATURECTL_ONLINE_PG_PASSWORD}}\n  sslmode: disable\n  vector_enabled: true\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--vectors", default="10000,100000", help="vector counts, ascending")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    settings = load_settings()
    ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    online = OnlinePostgres(settings)
    online.start()
    online.bootstrap()
    redis_server = RedisServer(settings)
    redis_server.start()
    export_store_secrets(settings)
    redis_yaml = (
        "online_store:\n  type: stores.redis.feast.RedisOnlineStore\n"
        f"  connection_string: 127.0.0.1:{settings.redis_port},db=9,password=${{FEATURECTL_REDIS_PASSWORD}}\n"
    )
    schema, pg_yaml = pg_schema(settings, online)
    root = Path(tempfile.mkdtemp(prefix="online-bench-"))
    try:
        stores = {
            "sqlite": repo(root, "sqlite", None),
            "postgres": repo(root, "postgres", pg_yaml),
            "redis": repo(root, "redis", redis_yaml),
        }
        print(f"command: {shlex.join([sys.executable, *sys.argv])}")
        print(f"{'':<44}{'SQLite':>22}{'Postgres':>22}{'Redis':>22}")

        def line(label: str, cells: dict[str, str]) -> None:
            print(
                f"{label:<44}"
                + "".join(f"{cells.get(k, 'n/a'):>22}" for k in ("sqlite", "postgres", "redis"))
            )

        sink = {k: f"{sink_rate(v, args.rows):,.0f}" for k, v in stores.items()}
        feast = {k: f"{feast_rate(v, args.rows):,.0f}" for k, v in stores.items()}
        line("processor sink (rows/s, batches of 1000)", sink)
        line("Feast write_to_online_store (anchor)", feast)
        for n in (1, 100):
            line(
                f"get_online_features {n} entities p50/p99",
                {k: lookups(v, n, args.queries, args.rows) for k, v in stores.items()},
            )
        del stores["redis"]  # no vector search in Feast's Redis store
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
        with psycopg.connect(online.store_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
