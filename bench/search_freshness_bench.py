"""Commit-to-searchable freshness: a product inserted in Postgres, until similarity search finds it.

    .venv/bin/python -m bench.search_freshness_bench [--rows 100] [--stores postgres,milvus] [--rate 5]

Per online store (in one run, so the figures compare): a table of its own shaped like ``products``, a
copy of the ``product_documents`` view reading it, a running processor (in this process). Each row gets
a distinct text; its vector is computed beforehand with the view's model, so the row's own vector is
the query. The clock starts at the insert's commit and stops when ``retrieve_online_documents_v2``
(top 1, through Feast) answers with the row: decode, validation, the embedding, the sink's write and
the index making it searchable. Rows are inserted at ``--rate`` per second, one poll loop per row.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from feast import FeatureStore
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, drop_online_store, setup, use_online_store
from bench.embedding_bench import TAGS, VIEW, catalogue
from connectors.deploy import deploy
from embeddings.models import load_embedder
from embeddings.spec import spec_for
from stores.repository import feast_apply
from streams.processor import Processor, ProcessorConfig

STORES = ("postgres", "milvus")
WARM_UP = 8  # rows inserted and found first, not measured


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure(kind: str, rows: int, rate: float, timeout_s: float) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, rows not found in time) for ``kind``."""
    root = Path(tempfile.mkdtemp(prefix="featurectl-freshbench-"))
    name = f"bench_{uuid.uuid4().hex[:6]}"
    settings, pg, definition = setup(root, name, "products", "products.py", TAGS)
    use_online_store(settings, kind, name)
    stop = threading.Event()
    worker: threading.Thread | None = None
    try:
        deploy(settings, definition)
        feast_apply(settings.feature_repo)
        store = FeatureStore(repo_path=str(settings.feature_repo))
        spec = spec_for(store.get_feature_view(VIEW))
        assert spec is not None
        texts = [f"{name} {t}" for t in catalogue(rows + WARM_UP, seed=random.randrange(1 << 30))]
        queries = load_embedder(spec).embed(texts)
        processor = Processor(
            settings, store, ProcessorConfig.from_settings(settings, definition.topic_prefix)
        )
        worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
        worker.start()
        if not processor.assigned.wait(120):
            raise SystemExit("the processor got no partitions in 120 s")

        readers = threading.local()  # one FeatureStore per polling thread, built before its first row

        def found(index: int, committed: float) -> float | None:
            """Seconds from the commit until the row is the top hit of its own vector; None past the deadline."""
            reader = getattr(readers, "store", None) or FeatureStore(repo_path=str(settings.feature_repo))
            readers.store = reader
            sku = f"{name}-{index}"
            while time.monotonic() - committed < timeout_s:
                hits = reader.retrieve_online_documents_v2(
                    features=[f"{VIEW}:name", f"{VIEW}:description"], query=queries[index].tolist(), top_k=1
                ).to_dict()
                if hits.get("description") and hits["description"][0] == texts[index]:
                    return time.monotonic() - committed
                time.sleep(0.005)
            print(f"  {sku} not searchable after {timeout_s:.0f} s")
            return None

        samples: list[float] = []
        with psycopg.connect(pg.app_conninfo(), autocommit=True) as conn, ThreadPoolExecutor(8) as pool:
            insert = sql.SQL(
                "INSERT INTO {} (sku, name, description, category, price) VALUES (%s, 'Item', %s, 'c', 1)"
            ).format(sql.Identifier(name))
            # Warm-up, not measured: the processor's first batch, each polling thread's first search.
            for index in range(WARM_UP):
                conn.execute(insert, (f"{name}-{index}", texts[index]))
            for future in [pool.submit(found, index, time.monotonic()) for index in range(WARM_UP)]:
                future.result()
            pending = []
            for index, text in enumerate(texts[WARM_UP:], start=WARM_UP):
                started = time.monotonic()
                conn.execute(insert, (f"{name}-{index}", text))
                pending.append(pool.submit(found, index, time.monotonic()))
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
            for future in pending:
                took = future.result()
                if took is not None:
                    samples.append(took)
        missing = rows - len(samples)
        p50, p99 = percentiles(samples) if samples else (float("nan"), float("nan"))
        return p50 * 1000, p99 * 1000, missing
    finally:
        stop.set()
        if worker is not None:
            worker.join(30)
        drop_online_store(settings, kind, name)
        cleanup(settings, pg, definition, name, root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100, help="products inserted per store")
    ap.add_argument("--rate", type=float, default=5.0, help="inserts per second")
    ap.add_argument(
        "--stores", default=",".join(STORES), help="online stores that index vectors, comma-separated"
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a row may take to become searchable")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    figures = {kind: measure(kind, args.rows, args.rate, args.timeout) for kind in stores}
    command = (
        f".venv/bin/python -m bench.search_freshness_bench --rows {args.rows} --rate {args.rate:g} "
        f"--stores {','.join(stores)}"
    )
    print(f"\n{command}")
    print(
        f"commit in Postgres -> searchable through Feast's retrieve_online_documents_v2 (top 1, the row's own vector), "
        f"{args.rows} rows at {args.rate:g}/s"
    )
    print("| online store | p50 ms | p99 ms | not found |")
    print("|---|---:|---:|---:|")
    for kind, (p50, p99, missing) in figures.items():
        print(f"| {kind} | {p50:.0f} | {p99:.0f} | {missing} |")
    if any(missing for _, _, missing in figures.values()):
        raise SystemExit("some rows never became searchable")


if __name__ == "__main__":
    main()
