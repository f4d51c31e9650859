"""One table of ordering cases (stores/ordering.py), checked against every enforcer of the rule.

The rule is enforced by three guards: in Python (``FeastLayoutSink._decide``, the only guard of the
SQLite store, which decides under its write lock), in SQL (the Postgres store's version upsert, which
holds even against a stale pre-read by another writer) and in Lua (the Redis store's
script). Each case is run through each guard on its own, through the whole flush of every store folder
(``fresh_store``), and, where the history has the states it names, through the Arrow rewrites of
``materialize`` and ``compact``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from feast import FeatureStore

from core.errors import SourceChangedError
from stores.feast_layout import FeastLayoutSink, Version
from stores.ordering import READ
from stores.registry import open_online_sink
from stores.sink import DELETE, UPSERT, SinkRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VIEW = "customer_profile"
BIG = 2**52  # WAL positions near Lua's exact-integer limit (2**53) still compare exactly
WAL = 2_597_805_984  # a source past 2 GiB of WAL (this host's, 2026-11-26): beyond a 32-bit integer


@dataclass(frozen=True)
class Case:
    """Stored state, then one incoming change; what the rule says happens to it."""

    name: str
    incoming: Version
    outcome: str  # "applies", "older" (refused: below the stored version), "barrier", "rewound"
    stored: Version | None = None
    stored_deleted: bool = False  # the stored version is a delete's tombstone
    barrier: Version | None = None
    op: str = UPSERT
    later_commit: bool = False  # the incoming change was committed hours after the stored one


CASES = [
    Case("a new entity", (10, 0), "applies"),
    Case("the next change of the same transaction", (10, 6), "applies", stored=(10, 5)),
    Case("the same change delivered twice", (10, 5), "applies", stored=(10, 5)),
    Case("an earlier change of the same transaction", (10, 4), "older", stored=(10, 5)),
    Case("an earlier transaction with a higher lsn", (9, 900), "older", stored=(10, 5)),
    Case("a later transaction with a lower lsn", (11, 1), "applies", stored=(10, 5)),
    Case("a snapshot read after the stored change", (11, READ), "applies", stored=(10, 5)),
    Case("a snapshot read before a change committed at its position", (10, READ), "older", stored=(10, 0)),
    Case("a change committed after a snapshot read", (10, 0), "applies", stored=(10, READ)),
    Case("a replay under a delete's tombstone", (15, 0), "older", stored=(20, 0), stored_deleted=True),
    Case("a re-insert after a delete", (21, 0), "applies", stored=(20, 0), stored_deleted=True),
    Case("a delete of a stored entity", (12, 0), "applies", stored=(10, 5), op=DELETE),
    Case("a delete older than the stored change", (8, 0), "older", stored=(10, 5), op=DELETE),
    Case("a backfilled row under a streamed change", (0, 0), "older", stored=(10, 5)),
    Case("a backfilled row of a new entity", (0, 0), "applies"),
    Case("a row from before a truncate", (15, 0), "barrier", barrier=(20, 0)),
    Case("a row at the truncate's own position", (20, 0), "applies", barrier=(20, 0)),
    Case("a row after the truncate", (21, 0), "applies", barrier=(20, 0)),
    Case(
        "a change above the barrier but under the stored", (22, 0), "older", stored=(25, 0), barrier=(20, 0)
    ),
    Case("positions near 2**53", (BIG + 1, 0), "applies", stored=(BIG, 0)),
    # The change position (a WAL position) past 2 GiB, as on every production source.
    Case("a change position past 2 GiB of WAL", (WAL + 900, WAL + 700), "applies", stored=(WAL, WAL + 100)),
    Case("an earlier change past 2 GiB of WAL", (WAL, WAL + 50), "older", stored=(WAL, WAL + 100)),
    Case("a truncate past 2 GiB of WAL", (WAL, WAL + 50), "barrier", barrier=(WAL + 10, WAL + 20)),
    Case("positions near 2**53, older by one", (BIG, 0), "older", stored=(BIG + 1, 0)),
    Case("an older position committed hours later", (5, 0), "rewound", stored=(10, 0), later_commit=True),
]
IDS = [c.name.replace(" ", "-") for c in CASES]


def at(version: Version, cid: int, segment: str, op: str = UPSERT, later: bool = False) -> SinkRow:
    """A row of ``customer_profile`` at ``version``, committed ``version[0]`` seconds after T0."""
    when = T0 + timedelta(seconds=min(version[0], 10**6)) + (timedelta(hours=3) if later else timedelta(0))
    features = {} if op == DELETE else {"country": "GB", "segment": segment, "credit_limit": 1.0}
    cdc = "d" if op == DELETE else "r" if version[1] == READ else "u"
    return SinkRow(VIEW, op, {"customer_id": cid}, features, when, version[0], cdc, "t[0]", None, version[1])


def incoming(case: Case, cid: int) -> SinkRow:
    return at(case.incoming, cid, "incoming", case.op, case.later_commit)


def seed(sink: FeastLayoutSink, case: Case, cids: list[int]) -> None:
    """Store ``case``'s state for each entity through the normal write path."""
    if case.stored is not None:
        op = DELETE if case.stored_deleted else UPSERT
        sink.add([at(case.stored, cid, "stored", op) for cid in cids])
        assert len(sink.flush()) == len(cids)
    if case.barrier is not None:
        sink.add_barrier(VIEW, case.barrier)
        sink.flush()


def segments(store: FeatureStore, cid: int) -> Any:
    return store.get_online_features(
        features=[f"{VIEW}:segment"], entity_rows=[{"customer_id": cid}]
    ).to_dict()["segment"][0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_python_guard(case: Case) -> None:
    key = b"entity"
    stored = {} if case.stored is None else {(VIEW, key): (case.stored, _us(case.stored))}
    barriers = {} if case.barrier is None else {VIEW: case.barrier}
    row = incoming(case, 1)
    latest: dict[tuple[str, bytes], tuple[SinkRow, Any]] = {(VIEW, key): (row, None)}
    if case.outcome == "rewound":
        with pytest.raises(SourceChangedError):
            FeastLayoutSink._decide(latest, stored, barriers)
        return
    decision = FeastLayoutSink._decide(latest, stored, barriers)
    assert (decision.applied == [row]) == (case.outcome == "applies")


def _us(version: Version) -> int:
    when = at(version, 0, "")
    return (when.event_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_sql_guard_alone(case: Case, postgres_store: FeatureStore) -> None:
    """The Postgres upsert refuses what the rule refuses even when the pre-read saw nothing stored."""
    sink = open_online_sink(postgres_store)
    try:
        seed(sink, case, [1])
        row = incoming(case, 1)
        view = sink._view(VIEW)
        key = sink._entity_key(view, row.keys)
        conn = sink._conn  # type: ignore[attr-defined]
        with conn.transaction(), conn.cursor() as cur:
            won = sink._write_versions(cur, [row], {id(row): key}, {})  # type: ignore[attr-defined]
        assert bool(won) == (case.outcome == "applies")
    finally:
        sink.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_lua_guard_alone(case: Case, redis_store: FeatureStore) -> None:
    """The Redis script refuses what the rule refuses, for the rule's own reason, without a pre-read."""
    sink = open_online_sink(redis_store)
    try:
        seed(sink, case, [1])
        row = incoming(case, 1)
        view = sink._view(VIEW)
        verdict = sink._apply_rows({VIEW: view}, [row])[0]  # type: ignore[attr-defined]
        want = {"applies": "ok", "barrier": "barrier"}.get(case.outcome, "older")
        assert verdict == want
    finally:
        sink.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_store_flushes_by_the_rule(case: Case, fresh_store: FeatureStore) -> None:
    sink = open_online_sink(fresh_store)
    try:
        seed(sink, case, [1])
        before = segments(fresh_store, 1)
        sink.add([incoming(case, 1)])
        if case.outcome == "rewound":
            with pytest.raises(SourceChangedError):
                sink.flush()
            sink.discard()
            assert segments(fresh_store, 1) == before  # nothing half-applied
            return
        applied = sink.flush()
        assert len(applied) == (case.outcome == "applies")
        after = segments(fresh_store, 1)
        if case.outcome != "applies":
            assert after == before
        else:
            assert after == (None if case.op == DELETE else "incoming")
    finally:
        sink.close()


# --- the Arrow rewrites of the history -------------------------------------------------------------
# History keeps every committed state, so its rewrites choose among rows of one entity: `materialize`
# its last row (what goes online), `compact` the highest version among rows of one instant. A TRUNCATE
# barrier and a rewound source are online-store states with no history row: those cases are the
# guards' alone.
HISTORY_CASES = [c for c in CASES if c.barrier is None and c.outcome != "rewound"]


def history_of(case: Case) -> Any:
    """The history of one entity: the stored change (if any), then the incoming one, as rows."""
    import pyarrow as pa

    rows = [at(case.stored, 1, "stored", DELETE if case.stored_deleted else UPSERT)] if case.stored else []
    rows.append(incoming(case, 1))
    return pa.Table.from_pylist(
        [
            {
                "customer_id": r.keys["customer_id"],
                "segment": r.features.get("segment"),
                "event_timestamp": r.event_time,
                "cdc_version": r.version,
                "cdc_version_minor": r.version_minor,
                "cdc_deleted": r.op == DELETE,
                "ingested_at": T0,
            }
            for r in rows
        ]
    )


@pytest.mark.parametrize("case", HISTORY_CASES, ids=[c.name.replace(" ", "-") for c in HISTORY_CASES])
def test_the_arrow_rewrites(case: Case) -> None:
    from jobs.compact import CompactReport, _dedup
    from jobs.materialize import latest_of_each_entity

    table = history_of(case)
    rule_keeps = (case.incoming if case.outcome == "applies" else case.stored) or case.incoming
    last = latest_of_each_entity(table, ["customer_id"]).to_pylist()
    assert [(r["cdc_version"], r["cdc_version_minor"]) for r in last] == [rule_keeps], "materialize"

    kept = {
        (r["cdc_version"], r["cdc_version_minor"])
        for r in _dedup(table, ["customer_id"], CompactReport("v")).to_pylist()
    }
    same_instant = (
        case.stored is not None and at(case.stored, 1, "").event_time == incoming(case, 1).event_time
    )
    # One instant: only the version the rule keeps stays; two instants: both committed states stay.
    both = {case.incoming} if case.stored is None else {case.incoming, case.stored}
    assert kept == ({rule_keeps} if same_instant else both), "compact"


def test_a_store_made_by_an_earlier_release_takes_positions_past_2_gib(local_postgres: Any) -> None:
    """Tables created with a 32-bit ``version_minor`` are widened when a sink or `feast apply` opens them."""
    import psycopg
    from psycopg import sql

    from stores.postgres.tables import BARRIERS, CONTRIBUTIONS, VERSIONS, ensure_tables

    schema = "guards_migration"
    with psycopg.connect(local_postgres.server.store_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        # The earlier release's tables, as it created them.
        conn.execute(
            f"CREATE TABLE {VERSIONS} (view TEXT NOT NULL, entity_key BYTEA NOT NULL, version BIGINT NOT NULL, "
            "version_minor INTEGER NOT NULL, event_us BIGINT, deleted BOOLEAN NOT NULL, join_keys TEXT NOT NULL, "
            "PRIMARY KEY (view, entity_key))"
        )
        conn.execute(f"INSERT INTO {VERSIONS} VALUES ('v', 'k', 5, 7, 0, false, '{{}}')")
        conn.execute(
            f"CREATE TABLE {BARRIERS} (view TEXT PRIMARY KEY, version BIGINT NOT NULL, version_minor INTEGER NOT NULL)"
        )
        with conn.cursor() as cur:
            ensure_tables(cur)
            ensure_tables(cur)  # idempotent
            cur.execute(
                "SELECT table_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                "AND column_name = 'version_minor' ORDER BY table_name",
                (schema,),
            )
            assert dict(cur.fetchall()) == {t: "bigint" for t in (BARRIERS, CONTRIBUTIONS, VERSIONS)}
            cur.execute(f"UPDATE {VERSIONS} SET version_minor = %s RETURNING version, version_minor", (WAL,))
            assert cur.fetchall() == [(5, WAL)]  # the stored row kept, the position now fits
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
