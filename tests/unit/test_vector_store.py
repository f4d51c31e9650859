"""The online store's vector index through Feast: the sink writes, Feast reads by key and by similarity."""

from datetime import UTC, datetime

import numpy as np
import pytest
from feast import FeatureStore

from core.errors import ConfigError, TransientError
from embeddings.spec import spec_for
from stores.feast_layout import FeastLayoutSink
from stores.registry import open_online_sink
from stores.sink import DELETE, UPSERT, SinkRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VIEW = "product_documents"


def unit(*hot: int) -> list[float]:
    v = np.zeros(384, dtype=np.float32)
    v[list(hot)] = 1.0
    return (v / np.linalg.norm(v)).tolist()


def product(
    pid: int,
    version: int,
    vector: list[float] | None,
    name: str = "p",
    op: str = UPSERT,
    model: str | None = None,
    price: float = 1.0,
) -> SinkRow:
    features = (
        {}
        if op == DELETE
        else {
            "name": name,
            "description": f"about {name}",
            "category": "c",
            "price": price,
            "embedding": vector,
        }
    )
    return SinkRow(VIEW, op, {"product_id": pid}, features, T0, version, "u", f"t[0] offset={version}", model)


@pytest.fixture(params=["sqlite", "postgres", "milvus"])
def fresh_store(request: pytest.FixtureRequest) -> FeatureStore:
    """The online stores that index vectors (Redis refuses vector views: test_redis_refuses_vector_views)."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


def test_redis_refuses_vector_views_naming_the_stores_that_index_vectors(redis_store: FeatureStore) -> None:
    sink = open_online_sink(redis_store)
    sink.add([product(1, 1, unit(0), model=fingerprint(redis_store))])
    with pytest.raises(ConfigError, match=r"(?s)no vector search.*PgVectorOnlineStore"):
        sink.flush()
    sink.close()


@pytest.fixture
def sink(fresh_store: FeatureStore):  # type: ignore[no-untyped-def]
    s = open_online_sink(fresh_store)
    yield s
    s.close()


def fingerprint(store: FeatureStore) -> str:
    spec = spec_for(store.get_feature_view(VIEW))
    assert spec is not None
    return spec.fingerprint


def nearest(store: FeatureStore, query: list[float], k: int = 3) -> list[tuple[int, str]]:
    got = store.retrieve_online_documents_v2(
        features=[f"{VIEW}:name", f"{VIEW}:embedding"], query=query, top_k=k
    ).to_dict()
    ranked = sorted(zip(got["distance"], got.get("product_id", []), got["name"], strict=True))
    return [(pid, name) for _, pid, name in ranked]


def test_similarity_search_returns_nearest_first_with_their_own_features(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    fp = fingerprint(fresh_store)
    sink.add(
        [
            product(3, 1, unit(0), "boots", model=fp),
            product(1, 2, unit(1), "mug", model=fp),
            product(2, 3, unit(0, 1), "both", model=fp),
        ]
    )
    sink.flush()
    assert nearest(fresh_store, unit(0)) == [(3, "boots"), (2, "both"), (1, "mug")]
    assert nearest(fresh_store, unit(1), k=1) == [(1, "mug")]
    by_key = fresh_store.get_online_features(
        features=[f"{VIEW}:embedding", f"{VIEW}:name"], entity_rows=[{"product_id": 3}, {"product_id": 9}]
    ).to_dict()
    assert by_key["embedding"][0] == pytest.approx(unit(0)) and by_key["embedding"][1] is None


def test_a_deleted_entity_leaves_similarity_results(fresh_store: FeatureStore, sink: FeastLayoutSink) -> None:
    fp = fingerprint(fresh_store)
    sink.add([product(1, 1, unit(0), "boots", model=fp), product(2, 2, unit(1), "mug", model=fp)])
    sink.flush()
    sink.add([product(1, 3, None, op=DELETE)])
    sink.flush()
    assert nearest(fresh_store, unit(0)) == [(2, "mug")]


def test_a_vector_of_another_model_is_refused_until_the_processor_sees_the_declaration(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    sink.add([product(1, 1, unit(0), model="0123456789ab")])
    with pytest.raises(TransientError, match="re-embeds the batch"):
        sink.flush()
    sink.discard()
    assert nearest(fresh_store, unit(0)) == []


def test_an_unchanged_text_keeps_its_stored_vector(fresh_store: FeatureStore, sink: FeastLayoutSink) -> None:
    fp = fingerprint(fresh_store)
    sink.add([product(1, 1, unit(0), "boots", model=fp)])
    sink.flush()
    spec = spec_for(fresh_store.get_feature_view(VIEW))
    assert spec is not None
    before = sink.stored_vectors(spec, [{"product_id": 1}])[0]
    sink.add([product(1, 2, unit(0), "boots", model=fp, price=2.0)])
    sink.flush()
    after = sink.stored_vectors(spec, [{"product_id": 1}])[0]
    assert before is not None and after == before  # same vector, same version: not rewritten
    price = fresh_store.get_online_features(
        features=[f"{VIEW}:price"], entity_rows=[{"product_id": 1}]
    ).to_dict()["price"]
    assert price == [2.0]


def test_a_query_of_the_wrong_dimension_names_the_model(fresh_store: FeatureStore) -> None:
    with pytest.raises(ValueError, match="embed the query with that model"):
        fresh_store.retrieve_online_documents_v2(features=[f"{VIEW}:name"], query=[0.1, 0.2], top_k=1)


def test_a_unique_vector_among_many_repeated_ones_is_found_first(
    fresh_store: FeatureStore, sink: FeastLayoutSink
) -> None:
    """A catalogue whose texts repeat (54 distinct vectors over 1,849 products), rewritten a few times (price
    updates), then one product's text changed to a unique one: a search for it finds it first, and top-10
    distances match an exact search. On pgvector an HNSW index over every vector row missed it entirely."""
    fp = fingerprint(fresh_store)
    rng = np.random.default_rng(7)
    distinct = rng.normal(size=(54, 384)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    vectors = {pid: distinct[pid % 54] for pid in range(1, 1850)}
    for version in range(6):  # the first write, then five rewrites of the same vectors
        sink.add(
            [
                product(pid, 10 * pid + version, v.tolist(), f"p{pid}", model=fp, price=version)
                for pid, v in vectors.items()
            ]
        )
        sink.flush()
    unique = rng.normal(size=384).astype(np.float32)
    unique /= np.linalg.norm(unique)
    vectors[700] = unique
    sink.add([product(700, 10 * 700 + 9, unique.tolist(), "unique", model=fp)])
    sink.flush()

    assert nearest(fresh_store, unique.tolist(), k=10)[0] == (700, "unique")
    matrix = np.stack(list(vectors.values()))
    hits = total = 0
    for query in [unique, *distinct[:5], *(rng.normal(size=(5, 384)).astype(np.float32))]:
        query = query / np.linalg.norm(query)
        exact = np.sort(1 - matrix @ query)[:10]
        got = fresh_store.retrieve_online_documents_v2(
            features=[f"{VIEW}:name", f"{VIEW}:embedding"], query=query.tolist(), top_k=10
        ).to_dict()["distance"]
        found = sorted(got)
        hits += sum(1 for d in found if np.any(np.isclose(exact, d, atol=1e-4)))
        total += 10
    assert hits / total >= 0.95, f"recall@10 {hits / total:.2f} against an exact search"


def test_each_search_runs_with_the_configured_ef_search(postgres_store: FeatureStore) -> None:
    """hnsw.ef_search is set on the store's connection (one round trip per search, not a transaction with
    SET LOCAL), so a changed setting must reach the next search, and a raised one must not linger."""
    sink = open_online_sink(postgres_store)
    sink.add([product(1, 1, unit(0), "boots", model=fingerprint(postgres_store))])
    sink.flush()
    sink.close()
    online = postgres_store._get_provider().online_store
    for ef_search, top_k, expected in ((40, 3, "40"), (300, 3, "300"), (40, 3, "40"), (40, 50, "100")):
        postgres_store.config.online_store.hnsw_ef_search = ef_search
        assert nearest(postgres_store, unit(0), k=top_k) == [(1, "boots")]
        with online._get_conn(postgres_store.config, autocommit=True) as conn:  # the search's (singleton)
            row = conn.execute("SHOW hnsw.ef_search").fetchone()
        assert row is not None and row[0] == expected, (ef_search, top_k)


def _plan_nodes(plan: dict) -> list[dict]:  # type: ignore[type-arg]
    return [plan, *(n for child in plan.get("Plans", []) for n in _plan_nodes(child))]


def _top5(store: FeatureStore, query: np.ndarray) -> list[tuple[int, float]]:
    """The 5 nearest products to ``query`` through Feast, as (product_id, distance), nearest first."""
    got = store.retrieve_online_documents_v2(
        features=[f"{VIEW}:name"], query=query.tolist(), top_k=5
    ).to_dict()
    return sorted(zip(got["product_id"], got["distance"], strict=True), key=lambda hit: hit[1])


def _topic_vectors(seed: int, topics: int) -> np.ndarray:
    """``topics`` topics of 10 unit vectors each, topic by topic: a vector's nearest are its topic's, as with text
    embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, 384))
    vectors = (np.repeat(centres, 10, axis=0) + 0.3 * rng.normal(size=(10 * topics, 384))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # type: ignore[no-any-return]


def _search_indexes(store: FeatureStore, query: np.ndarray, quantization: str = "none") -> list[str]:
    """The indexes the plugin's similarity search (stores/postgres/feast.py ``search_query``) plans to use for
    ``query``, sequential scans disabled (a small table would be scanned whole, which is also fine)."""
    from feast.infra.online_stores.helpers import compute_table_id

    from stores.postgres.feast import search_query

    view = store.get_feature_view(VIEW)
    spec = spec_for(view)
    assert spec is not None
    table = compute_table_id(store.config.project, view)
    with (
        store._get_provider().online_store._get_conn(store.config, autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SET enable_seqscan = off")
        params = {"q": str(query.tolist()), "k": 5, "c": 20, "features": ["embedding", "name"]}
        cur.execute(
            b"EXPLAIN (FORMAT JSON) " + search_query(table, spec, quantization).as_bytes(conn), params
        )
        row = cur.fetchone()
        cur.execute("RESET enable_seqscan")
    assert row is not None
    return [n.get("Index Name", "") for n in _plan_nodes(row[0][0]["Plan"])]


def test_a_small_catalogue_is_searched_through_the_vector_hash_index(postgres_store: FeatureStore) -> None:
    """From the nearest vectors to the entities holding them, the search must look each vector up by its
    hash: the planner once hashed every product's vector per neighbour instead (a small table's cheap-looking
    plan, hashing costed like an addition; 300 products: 50 ms a search)."""
    from feast.infra.online_stores.helpers import compute_table_id

    from stores.postgres.feast import search_query
    from stores.postgres.tables import vector_hash_index

    fp = fingerprint(postgres_store)
    sink = open_online_sink(postgres_store)
    sink.add([product(pid, 1, unit(pid % 384, (pid * 7) % 384), f"p{pid}", model=fp) for pid in range(300)])
    sink.flush()
    sink.close()
    view = postgres_store.get_feature_view(VIEW)
    spec = spec_for(view)
    assert spec is not None
    table = compute_table_id(postgres_store.config.project, view)
    online = postgres_store._get_provider().online_store
    with online._get_conn(postgres_store.config, autocommit=True) as conn:
        # As a prepared statement's generic plan, which a search gets after five runs (psycopg prepares it).
        text = search_query(table, spec).as_string(conn)
        text = text.replace("%(q)s", "$1").replace("%(k)s", "$2").replace("%(features)s", "$3")
        conn.execute(f"PREPARE search(text, int, text[]) AS {text}")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            # A utility statement takes no bind parameters: the query vector as a literal.
            query = f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE search('{unit(3)}', 10, '{{embedding,name}}')"
            row = conn.execute(query).fetchone()
        finally:
            conn.execute("RESET plan_cache_mode")
            conn.execute("DEALLOCATE search")
    assert row is not None
    nodes = _plan_nodes(row[0][0]["Plan"])
    hashed_per_row = [
        n
        for n in nodes
        for key in ("Hash Cond", "Join Filter", "Filter")
        if "md5" in n.get(key, "") or "vector_hash(" in n.get(key, "")
    ]
    assert not hashed_per_row, hashed_per_row
    assert any(n.get("Index Name") == vector_hash_index(table) for n in nodes), [
        n["Node Type"] for n in nodes
    ]
    assert len(nearest(postgres_store, unit(3), k=10)) == 10


def test_a_change_of_vector_type_rebuilds_the_index_with_every_vector_and_searches_it(
    postgres_store: FeatureStore,
) -> None:
    """``vector_type: halfvec`` (16-bit copies in the index) at ``feast apply``: the vectors written before are
    all in the rebuilt index, new ones join it, the search goes through the HNSW index (a query cast to the
    wrong type scans every row), the ranking is the same and distances agree to 16-bit precision; until the
    apply, the store serves as it is; back to ``vector`` the same."""
    from feast.infra.online_stores.helpers import compute_table_id

    from stores.postgres.tables import distinct_vectors_type, vector_index_name

    fp = fingerprint(postgres_store)
    view = postgres_store.get_feature_view(VIEW)
    spec = spec_for(view)
    assert spec is not None
    table = compute_table_id(postgres_store.config.project, view)
    online, config = postgres_store._get_provider().online_store, postgres_store.config
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sink = open_online_sink(postgres_store)
    sink.add([product(pid, 1, vectors[pid].tolist(), f"p{pid}", model=fp) for pid in range(20)])
    sink.flush()

    def search(query: np.ndarray) -> list[tuple[int, float]]:
        return _top5(postgres_store, query)

    def stored_type_and_plan() -> tuple[str | None, list[str]]:
        indexes = _search_indexes(postgres_store, vectors[0])
        with online._get_conn(config, autocommit=True) as conn, conn.cursor() as cur:
            return distinct_vectors_type(cur, table), indexes

    try:
        config.online_store.vector_type = "halfvec"
        assert [pid for pid, _ in search(vectors[7])][:1] == [7]  # not applied yet: served as stored
        online.update(config, [], [view], [], [], partial=True)
        stored, indexes = stored_type_and_plan()
        assert stored == "halfvec" and vector_index_name(table) in indexes, indexes
        sink.add([product(pid, 1, vectors[pid].tolist(), f"p{pid}", model=fp) for pid in range(20, 40)])
        sink.flush()
        for pid in (0, 7, 19, 20, 39):  # written before the change, and after
            hits = search(vectors[pid])
            exact = np.sort(1 - vectors @ vectors[pid])[:5]
            assert hits[0][0] == pid, hits
            assert [d for _, d in hits] == pytest.approx(exact, abs=2e-3)
    finally:
        config.online_store.vector_type = "vector"
        online.update(config, [], [view], [], [], partial=True)
        sink.close()
    stored, indexes = stored_type_and_plan()
    assert stored == "vector" and vector_index_name(table) in indexes, indexes
    assert [pid for pid, _ in search(vectors[39])][:1] == [39]


def test_binary_quantization_searches_the_sign_bits_and_ranks_by_exact_distance(
    postgres_store: FeatureStore,
) -> None:
    """``quantization: binary`` at ``feast apply``: the index is rebuilt over the vectors' sign bits (Hamming) with
    every vector written before, new ones join it, a search goes through it and returns the exact nearest with
    their exact cosine distances (the candidates re-ranked on the stored vectors), not Hamming ones; back to
    ``none`` the index is over the vectors again."""
    from feast.infra.online_stores.helpers import compute_table_id

    from stores.postgres.tables import vector_index_name, vector_index_quantization

    fp = fingerprint(postgres_store)
    view = postgres_store.get_feature_view(VIEW)
    spec = spec_for(view)
    assert spec is not None
    table = compute_table_id(postgres_store.config.project, view)
    online, config = postgres_store._get_provider().online_store, postgres_store.config
    vectors = _topic_vectors(11, 8)
    sink = open_online_sink(postgres_store)
    sink.add([product(pid, 1, vectors[pid].tolist(), f"p{pid}", model=fp) for pid in range(40)])
    sink.flush()

    def search(query: np.ndarray) -> list[tuple[int, float]]:
        return _top5(postgres_store, query)

    def built_and_plan(quantization: str) -> tuple[str | None, list[str]]:
        indexes = _search_indexes(postgres_store, vectors[0], quantization)
        with online._get_conn(config, autocommit=True) as conn, conn.cursor() as cur:
            return vector_index_quantization(cur, table), indexes

    try:
        config.online_store.quantization = "binary"
        config.online_store.rerank_candidates = 20
        online.update(config, [], [view], [], [], partial=True)
        built, indexes = built_and_plan("binary")
        assert built == "binary" and vector_index_name(table) in indexes, indexes
        sink.add([product(pid, 1, vectors[pid].tolist(), f"p{pid}", model=fp) for pid in range(40, 80)])
        sink.flush()
        for pid in (0, 13, 39, 40, 79):  # written before the change, and after
            hits = search(vectors[pid])
            distances = 1 - vectors @ vectors[pid]
            exact = np.argsort(distances)[:5]
            assert [p for p, _ in hits] == exact.tolist(), hits
            assert [d for _, d in hits] == pytest.approx(distances[exact], abs=1e-5)
    finally:
        config.online_store.quantization = "none"
        online.update(config, [], [view], [], [], partial=True)
        sink.close()
    built, indexes = built_and_plan("none")
    assert built == "none" and vector_index_name(table) in indexes, indexes
    assert [pid for pid, _ in search(vectors[79])][:1] == [79]


def test_an_external_index_answers_searches_with_its_settings_and_outlives_a_model_change(
    postgres_store: FeatureStore,
) -> None:
    """``vector_index: external`` at ``feast apply``: the plugin's HNSW index goes and none is made; an index the
    DBA creates on the distinct vectors (here pgvector's IVFFlat) answers the search with ``search_settings`` on
    the plugin's connection (all lists probed: exact); a model change rebuilds the table and re-creates that
    index; an index that cannot be re-created (wrong type after a ``vector_type`` change) fails the apply, naming
    it, and leaves the store as it was; back to ``hnsw`` the plugin's index returns."""
    from feast.infra.online_stores.helpers import compute_table_id

    from stores.postgres.tables import (
        MODELS,
        distinct_vectors_table,
        distinct_vectors_type,
        vector_index_name,
    )

    fp = fingerprint(postgres_store)
    view = postgres_store.get_feature_view(VIEW)
    table = compute_table_id(postgres_store.config.project, view)
    vt = distinct_vectors_table(table)
    online, config = postgres_store._get_provider().online_store, postgres_store.config
    vectors = _topic_vectors(5, 4)
    sink = open_online_sink(postgres_store)
    sink.add([product(pid, 1, vectors[pid].tolist(), f"p{pid}", model=fp) for pid in range(20)])
    sink.flush()

    def run(statement: str) -> list[tuple]:  # type: ignore[type-arg]
        with online._get_conn(config, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def indexes() -> set[str]:
        # This store's table (its schema first on the search path): other tests' schemas hold the same names.
        rows = run(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            f"WHERE i.indrelid = to_regclass('\"{vt}\"')"
        )
        return {row[0] for row in rows}

    def assert_exact(pids: tuple[int, ...], stored: int) -> None:
        for pid in pids:
            hits = _top5(postgres_store, vectors[pid])
            distances = 1 - vectors[:stored] @ vectors[pid]
            assert [p for p, _ in hits] == np.argsort(distances)[:5].tolist(), hits

    try:
        config.online_store.vector_index = "external"
        config.online_store.search_settings = {"ivfflat.probes": 4}
        online.update(config, [], [view], [], [], partial=True)
        assert vector_index_name(table) not in indexes()
        run(f'CREATE INDEX mine ON "{vt}" USING ivfflat (vector vector_cosine_ops) WITH (lists = 4)')
        assert "mine" in _search_indexes(postgres_store, vectors[0])
        assert_exact((0, 7, 19), 20)
        assert run("SHOW ivfflat.probes") == [("4",)]  # on the search's connection (a singleton)
        sink.add([product(pid, 1, vectors[pid].tolist(), f"p{pid}", model=fp) for pid in range(20, 40)])
        sink.flush()
        assert_exact((20, 39), 40)

        run(f"UPDATE {MODELS} SET fingerprint = 'an older model' WHERE view = '{VIEW}'")
        online.update(
            config, [], [view], [], [], partial=True
        )  # the old model's vectors go, with their table
        assert run(f'SELECT count(*) FROM "{vt}"') == [(0,)] and "mine" in indexes()
        sink.add([product(pid, 2, vectors[pid].tolist(), f"p{pid}", model=fp) for pid in range(40)])
        sink.flush()
        assert "mine" in _search_indexes(postgres_store, vectors[0])
        assert_exact((3, 21), 40)

        config.online_store.vector_type = "halfvec"  # mine is over 32-bit vectors: it cannot follow
        with pytest.raises(
            ConfigError, match=r"(?s)your index mine .* could not be re-created.*fix: drop it"
        ):
            online.update(config, [], [view], [], [], partial=True)
        with online._get_conn(config, autocommit=True) as conn, conn.cursor() as cur:
            assert distinct_vectors_type(cur, table) == "vector" and "mine" in indexes()
        assert_exact((5,), 40)
    finally:
        config.online_store.vector_type = "vector"
        config.online_store.vector_index = "hnsw"
        config.online_store.search_settings = {}
        online.update(config, [], [view], [], [], partial=True)
        sink.close()
    assert vector_index_name(table) in indexes()
    assert [pid for pid, _ in _top5(postgres_store, vectors[39])][:1] == [39]
    assert run("SHOW ivfflat.probes") == [("1",)]  # the setting left the connection with the config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"vchordrq.probes": "10"}, r"(?s)vchordrq.probes is not a setting of this Postgres.*shared_preload"),
        ({"hnsw.ef_search": "many"}, r"hnsw.ef_search = 'many' was refused by Postgres"),
    ],
)
def test_a_search_setting_postgres_does_not_take_fails_feast_apply_naming_it(
    postgres_store: FeatureStore, settings: dict[str, str], message: str
) -> None:
    """A typo, an extension not loaded, or a value Postgres refuses: an error at ``feast apply``, not searches
    that silently run without the setting (Postgres keeps an unknown ``prefix.name`` as a placeholder)."""
    online, config = postgres_store._get_provider().online_store, postgres_store.config
    view = postgres_store.get_feature_view(VIEW)
    sink = open_online_sink(postgres_store)
    sink.add([product(1, 1, unit(0), "boots", model=fingerprint(postgres_store))])
    sink.flush()
    sink.close()
    try:
        config.online_store.search_settings = settings
        with pytest.raises(ConfigError, match=message):
            online.update(config, [], [view], [], [], partial=True)
    finally:
        config.online_store.search_settings = {}
    assert nearest(postgres_store, unit(0)) == [(1, "boots")]  # its connection still serves


def test_a_search_setting_name_that_is_not_a_name_is_refused_with_the_config() -> None:
    from pydantic import ValidationError

    from stores.postgres.feast import PgVectorOnlineStoreConfig

    connection = {"host": "127.0.0.1", "database": "features", "user": "u", "password": "p"}
    with pytest.raises(ValidationError, match=r"'ivfflat.probes; RESET ALL' is not a Postgres setting name"):
        PgVectorOnlineStoreConfig.model_validate(
            {**connection, "search_settings": {"ivfflat.probes; RESET ALL": 1}}
        )
    config = PgVectorOnlineStoreConfig.model_validate(
        {**connection, "search_settings": {"vchordrq.probes": 10, "vchordrq.prefilter": False}}
    )
    assert config.search_settings == {"vchordrq.probes": "10", "vchordrq.prefilter": "false"}
