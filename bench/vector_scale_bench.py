"""Top-10 similarity on the Postgres + pgvector online store at a million vectors, loaded like a backfill.

    .venv/bin/python bench/vector_scale_bench.py [--vectors 1000000] [--queries 100] [--ef-search 100,200]
        [--warm-up 200]
        [--m 16] [--ef-construction 64] [--vector-type vector|halfvec] [--quantization none|binary]
        [--rerank 200] [--data structured|isotropic|docstrings]
        [--writing 1000]
        [--vector-index external --index "USING vchordrq (vector vector_cosine_ops) WITH (options = ...)"
         --search-setting vchordrq.probes=10 --extension vchord]

Writing a million vectors one row at a time through a live HNSW index is slow (~550 vectors/s here,
bench/online_store_bench.py), so a load of that size goes the way pgvector recommends for bulk loads:
the view's HNSW index dropped, every row written through the processor's sink (the same rows and
bookkeeping the stream writes), then the index built once (``maintenance_work_mem`` raised for that
session) with the plugin's own declaration (stores/postgres/feast.py). Prints the load and build times,
then top-10 p50/p99 through Feast's ``retrieve_online_documents_v2`` and recall@10 against an exact numpy
search. The data: synthetic vectors as hard for the index as real sentence embeddings (``structured``, the
default: their neighbour cosines and local intrinsic dimensionality match the project's model on real
sentences, bench/vector_data_bench.py), the older isotropic clusters (``--data isotropic``: far harder than
any text, a stress case), or real sentence embeddings (``--data docstrings``, up to ~185,000 here). Starts
the local online-store Postgres if needed.

``--vector-index external --index SQL``: the plugin makes no index and the bench creates ``CREATE INDEX ... ON
<distinct vectors> SQL`` after the load instead (e.g. VectorChord's ``vchordrq``, whose extension must be
installed in the server and preloaded; ``--extension`` creates it), searched with the ``--search-setting``s.

``--writing RATE`` then measures the same queries while another process writes up to RATE new vectors/s
through the sink into the same view, the HNSW index live (as the processor does when products change; the
model's own CPU is not in it), and prints the rate it reached. The written vectors are generated the same way
on both sides (``written_vectors``), so the exact search includes the ones written so far.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from feast.infra.online_stores.helpers import compute_table_id
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feast import FeatureStore

from bench.online_store_bench import (
    fill_vectors,
    pct,
    repo,
    similarity,
    structured_vectors,
    unit_vectors,
    vector_row,
)
from bench.vector_data_bench import docstring_vectors
from core.settings import ensure_secrets_file, export_store_secrets, load_settings
from embeddings.spec import spec_for
from stack.launcher import GENERATED_SECRETS
from stores.postgres.feast import PgVectorOnlineStore
from stores.postgres.server import OnlinePostgres
from stores.postgres.tables import distinct_vectors_table, vector_index_name
from stores.registry import open_online_sink

WRITES_PER_S = 10  # the writer's flushes per second: batches of RATE/10 vectors, as a processor's batches


# Synthetic data: the generator per --data choice (bench/online_store_bench.py says how hard each is).
SYNTHETIC = {"structured": structured_vectors, "isotropic": unit_vectors}


def written_vectors(start: int, stop: int, batch: int, data: str = "structured") -> np.ndarray:
    """The writer's vectors ``start..stop`` (multiples of ``batch``): generated as ``data`` (a SYNTHETIC
    kind; docstrings runs write structured ones), seeded per batch."""
    generate = SYNTHETIC.get(data, structured_vectors)
    parts = [generate(batch, 384, 1000 + i) for i in range(start, stop, batch)]
    return np.concatenate(parts) if parts else np.empty((0, 384), dtype=np.float32)


def write_new_vectors(
    repo_path: str,
    first_id: int,
    rate: int,
    data: str,
    stop: multiprocessing.synchronize.Event,
    written: multiprocessing.sharedctypes.Synchronized[int],
) -> None:
    """Writes new products ``first_id, first_id + 1, ...`` through the sink at ``rate`` vectors/s until ``stop``
    (``written_vectors``); ``written`` counts them."""
    store = FeatureStore(repo_path=repo_path)
    spec = spec_for(store.get_feature_view("product_documents"))
    assert spec is not None
    sink = open_online_sink(store)
    batch, started, done = max(1, rate // WRITES_PER_S), time.perf_counter(), 0
    while not stop.is_set():
        new = written_vectors(done, done + batch, batch, data)
        sink.add([vector_row(first_id + done + j, new[j], spec.fingerprint) for j in range(batch)])
        sink.flush()
        done += batch
        written.value = done
        stop.wait(max(0.0, started + done / rate - time.perf_counter()))
    sink.close()


# (view, registry version) -> view, kept across feast_view_cached uses.
_CACHED_VIEWS: dict[tuple[str, str], Any] = {}


@contextlib.contextmanager
def feast_view_cached() -> Iterator[None]:
    """Feast's ``FeatureStore.get_feature_view`` answering from the registry cache, one view per registry version,
    in this process only: what ``retrieve_online_documents_v2`` would cost if Feast cached its view lookup as it
    does for ``get_online_features`` (feast-dev/feast#6449). A measurement of that upstream fix, not a product path."""
    original = FeatureStore.get_feature_view
    views = _CACHED_VIEWS

    def cached(self: FeatureStore, name: str, allow_registry_cache: bool = False) -> Any:
        proto = getattr(self.registry, "cached_registry_proto", None)  # file and SQL registries keep one
        key = (name, proto.version_id if proto is not None else "")
        if key not in views:
            views[key] = original(self, name, allow_registry_cache=True)
        return views[key]

    FeatureStore.get_feature_view = cached  # type: ignore[method-assign]
    try:
        yield
    finally:
        FeatureStore.get_feature_view = original  # type: ignore[method-assign]


def warm_up(store: FeatureStore, vectors: np.ndarray, count: int) -> str:
    """Run ``count`` top-10 searches for stored vectors (not the measured queries) before anything is
    measured; their p50/p99. Right after a build or a restart the index is not in memory yet: its first
    searches read it from disk (a p99 of 133 ms at a million, where the warm p99 was 14 ms), a one-off cost
    that would otherwise land in whichever ef_search is measured first."""
    picks = np.random.default_rng(5).choice(len(vectors), size=min(count, len(vectors)), replace=False)
    samples = []
    for q in vectors[picks]:
        t = time.perf_counter()
        store.retrieve_online_documents_v2(features=["product_documents:name"], query=q.tolist(), top_k=10)
        samples.append(time.perf_counter() - t)
    return pct(samples)


def split(
    store: FeatureStore,
    conninfo: str,
    table: str,
    queries: np.ndarray,
    ef_search: int,
    quantization: str,
    rerank: int,
) -> str:
    """Where a top-10 query's time goes, p50 ms over ``queries``: the index scan inside the server (``EXPLAIN
    ANALYZE`` of the nearest-vectors step alone), the plugin's ``retrieve_online_documents_v2`` (its round
    trips, the join to the entities, decoding), Feast's ``FeatureStore`` method around it, and that method with
    its view lookup cached (``feast_view_cached``)."""
    view = store.get_feature_view("product_documents")
    online, config = store._get_provider().online_store, store.config
    scan: list[float] = []
    plugin: list[float] = []
    feast_api: list[float] = []
    feast_cached: list[float] = []
    # The nearest-vectors step of stores/postgres/feast.py search_query (binary: the candidates re-ranked).
    explain = sql.SQL(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT vec_hash FROM (SELECT vec_hash, vector FROM {} ORDER BY "
        "binary_quantize(vector)::bit(384) <~> binary_quantize(%(q)s::vector(384))::bit(384) LIMIT %(c)s) c "
        "ORDER BY vector <=> %(q)s::vector(384) LIMIT 10"
        if quantization == "binary"
        else "EXPLAIN (ANALYZE, FORMAT JSON) SELECT vec_hash FROM {} ORDER BY vector <=> %(q)s::vector(384) LIMIT 10"
    ).format(sql.Identifier(distinct_vectors_table(table)))
    if quantization == "binary":
        ef_search = max(ef_search, rerank)  # as the plugin sets it

    def through_feast(q: np.ndarray) -> float:
        t = time.perf_counter()
        store.retrieve_online_documents_v2(features=["product_documents:name"], query=q.tolist(), top_k=10)
        return (time.perf_counter() - t) * 1000

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef_search)))
        for name, value in store.config.online_store.search_settings.items():  # as the plugin sets them
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        for q in queries:
            plan = conn.execute(explain, {"q": str(q.tolist()), "c": max(rerank, 10)}).fetchone()
            assert plan is not None
            scan.append(plan[0][0]["Execution Time"])
            t = time.perf_counter()
            online.retrieve_online_documents_v2(config, view, ["name"], q.tolist(), 10)
            plugin.append((time.perf_counter() - t) * 1000)
            feast_api.append(through_feast(q))
    # A run of its own: an uncached search between two cached ones re-reads the registry, so the next one would
    # rebuild the view once more (Feast's name cache is per registry proto object).
    with feast_view_cached():
        feast_cached.extend(through_feast(q) for q in queries)
    median = statistics.median
    return (
        f"index scan in the server {median(scan):.2f} ms, the plugin's search {median(plugin):.2f} ms, "
        f"through Feast {median(feast_api):.2f} ms (its view lookup cached, as Feast does for "
        f"get_online_features: {median(feast_cached):.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--warm-up",
        type=int,
        default=200,
        help="searches for stored vectors before measuring (the index read into memory), not measured",
    )
    parser.add_argument("--maintenance-work-mem", default="3GB")
    parser.add_argument(
        "--data",
        choices=("structured", "isotropic", "docstrings"),
        default="structured",
        help="structured: synthetic vectors as hard for the index as real sentence embeddings (LID@20 ~7); "
        "isotropic: the older synthetic set, far harder (LID@20 ~34); docstrings: real sentences (the "
        "installed packages' docstrings, up to ~185,000) embedded with the project's model "
        "(bench/vector_data_bench.py)",
    )
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node (the store's hnsw_m)")
    parser.add_argument(
        "--ef-construction",
        type=int,
        default=64,
        help="HNSW build candidates (the store's hnsw_ef_construction)",
    )
    parser.add_argument(
        "--vector-type",
        choices=("vector", "halfvec"),
        default="vector",
        help="how the index stores its vectors (the store's vector_type): 32-bit vector or 16-bit halfvec",
    )
    parser.add_argument(
        "--quantization",
        choices=("none", "binary"),
        default="none",
        help="what the index navigates by (the store's quantization): the vectors, or their sign bits "
        "(binary_quantize, Hamming) with the nearest --rerank candidates ranked exactly",
    )
    parser.add_argument(
        "--rerank", type=int, default=200, help="candidates re-ranked per search with --quantization binary"
    )
    parser.add_argument(
        "--vector-index",
        choices=("hnsw", "external"),
        default="hnsw",
        help="who indexes the vectors (the store's vector_index): the plugin's HNSW, or the index --index creates",
    )
    parser.add_argument(
        "--index",
        metavar="SQL",
        help="with --vector-index external: the index, as the tail of CREATE INDEX ... ON <distinct vectors> "
        "(e.g. \"USING vchordrq (vector vector_cosine_ops) WITH (options = '[build.internal] lists = [2000]')\")",
    )
    parser.add_argument(
        "--extension",
        action="append",
        default=[],
        help="CREATE EXTENSION IF NOT EXISTS this (as the admin) first, e.g. vchord; repeatable",
    )
    parser.add_argument(
        "--search-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a search_settings entry of the store (e.g. vchordrq.probes=10); repeatable",
    )
    parser.add_argument(
        "--writing",
        type=int,
        default=0,
        help="also measure while this many new vectors/s are written into the view (0: idle only)",
    )
    parser.add_argument(
        "--ef-search",
        default="100",
        help="hnsw_ef_search values to measure, comma-separated (recall against latency)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the loaded schema at the end (its name is printed)"
    )
    parser.add_argument(
        "--reuse",
        metavar="SCHEMA",
        help="measure a schema kept by an earlier --keep run of the same --vectors/--data (no load, no build)",
    )
    args = parser.parse_args()
    if (args.vector_index == "external") != bool(args.index or args.reuse):
        parser.error("--index goes with --vector-index external (and is needed there, unless --reuse)")
    search_settings = dict(item.split("=", 1) for item in args.search_setting)
    settings = load_settings()
    ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
    online = OnlinePostgres(settings)
    online.start()
    online.bootstrap()
    export_store_secrets(settings)
    for extension in args.extension:
        with psycopg.connect(online.admin_conninfo(online.own.online_pg_database), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
    schema = args.reuse or f"bench_{uuid.uuid4().hex[:8]}"
    pg_yaml = online.online_store(schema)
    pg_yaml += (
        f"  hnsw_m: {args.m}\n  hnsw_ef_construction: {args.ef_construction}\n  vector_type: {args.vector_type}\n"
        f"  quantization: {args.quantization}\n  rerank_candidates: {args.rerank}\n"
        f"  vector_index: {args.vector_index}\n"
    )
    if search_settings:
        pg_yaml += "  search_settings:\n" + "".join(f"    {k}: '{v}'\n" for k, v in search_settings.items())
    root = Path(tempfile.mkdtemp(prefix="vector-bench-"))
    try:
        store = repo(root, "postgres", pg_yaml)
        view = store.get_feature_view("product_documents")
        spec = spec_for(view)
        assert spec is not None
        table = compute_table_id(store.config.project, view)
        conninfo = f"{online.store_conninfo()} options=-csearch_path={schema},public"
        if not args.reuse:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(vector_index_name(table)))
                )
        if args.data == "docstrings":
            vectors, queries = docstring_vectors(args.vectors, args.queries, settings.cache_dir / "bench")
        else:
            vectors = SYNTHETIC[args.data](args.vectors, 384, 7)
            queries = SYNTHETIC[args.data](args.queries, 384, 99)
        print(f"command: {shlex.join([sys.executable, *sys.argv])}", flush=True)
        print(f"data: {args.data}", flush=True)
        if args.reuse:
            print(f"reusing schema {schema}: its vectors and index as an earlier run loaded them", flush=True)
        else:
            loaded = fill_vectors(store, vectors, 0)
            print(f"{args.vectors:,} vectors written through the sink, no index: {loaded:.0f} s "
                  f"({args.vectors / loaded:,.0f} vectors/s)", flush=True)  # fmt: skip
            start = time.perf_counter()
            with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(args.maintenance_work_mem))
                )
                PgVectorOnlineStore._declare(cur, table, spec, store.config.online_store)
                if args.index:  # external: the plugin made none
                    cur.execute(
                        sql.SQL("CREATE INDEX {} ON {} ").format(
                            sql.Identifier(f"{table}__vectors_external"),
                            sql.Identifier(distinct_vectors_table(table)),
                        )
                        + sql.SQL(args.index)
                    )
                conn.commit()
            built = time.perf_counter() - start
            print(
                (
                    f"index built ({args.index}): "
                    if args.index
                    else f"HNSW index built (m={args.m}, ef_construction={args.ef_construction}, {args.vector_type}, "
                    f"quantization {args.quantization}"
                    + (f", {args.rerank} candidates re-ranked" if args.quantization == "binary" else "")
                    + "): "
                )
                + f"{built:.0f} s",
                flush=True,
            )
        if args.warm_up:  # at the widest ef_search measured: it visits the most of the graph
            store.config.online_store.hnsw_ef_search = max(int(x) for x in args.ef_search.split(","))
            latency = warm_up(store, vectors, args.warm_up)
            print(
                f"first {args.warm_up:,} searches (warm-up, not measured; stored vectors): p50/p99 {latency}"
            )
        for ef_search in (int(x) for x in args.ef_search.split(",")):
            store.config.online_store.hnsw_ef_search = ef_search
            latency, recall = similarity(store, vectors, queries)
            print(
                f"top-10 of {args.vectors:,} (ef_search {ef_search}): p50/p99 {latency}, recall@10 {recall:.2f}"
            )
            print(
                f"  where a query's time goes (p50): {split(store, conninfo, table, queries, ef_search, args.quantization, args.rerank)}"
            )
        if args.writing:
            ctx = multiprocessing.get_context("spawn")
            stop, written = ctx.Event(), ctx.Value("q", 0)
            writer = ctx.Process(
                target=write_new_vectors,
                args=(str(store.repo_path), len(vectors), args.writing, args.data, stop, written),
            )
            writer.start()
            try:
                deadline = time.monotonic() + 120
                while written.value == 0 and writer.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.1)  # the writer has loaded Feast and written its first batch
                batch, known = max(1, args.writing // WRITES_PER_S), np.empty((0, 384), dtype=np.float32)

                def added() -> tuple[np.ndarray, int]:
                    nonlocal known
                    known = np.concatenate(
                        [known, written_vectors(len(known), written.value, batch, args.data)]
                    )
                    return known, len(vectors)

                for ef_search in (int(x) for x in args.ef_search.split(",")):
                    store.config.online_store.hnsw_ef_search = ef_search
                    before, start = written.value, time.perf_counter()
                    latency, recall = similarity(store, vectors, queries, added)
                    rate = (written.value - before) / (time.perf_counter() - start)
                    print(
                        f"top-10 of {args.vectors:,} while {rate:,.0f} vectors/s are written (ef_search "
                        f"{ef_search}): p50/p99 {latency}, recall@10 {recall:.2f}"
                    )
            finally:
                stop.set()
                writer.join(60)
            if writer.exitcode != 0:
                sys.exit(f"the writer failed (exit {writer.exitcode}): its traceback is above")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if args.keep or args.reuse:
            print(
                f"schema {schema} kept: --reuse {schema} measures it again; DROP SCHEMA {schema} CASCADE removes it"
            )
        else:
            with psycopg.connect(online.store_conninfo(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
