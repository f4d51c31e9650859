"""Lookups on the Postgres store stay quick: a real-time process's connection to the local Postgres gets a
real-time backend (stores/postgres/priority.py), and a new table gets its planner statistics with its first rows
(stores/postgres/sink.py), so a 100-key lookup is planned on the index from the first load on."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from core.settings import PROJECT_ROOT
from stores.registry import open_online_sink
from stores.sink import UPSERT, SinkRow
from tests.conftest import LocalStore

CHILD = """
import os, sys, psycopg
from stores.postgres.priority import share_priority
if sys.argv[2] == "rt":
    os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
lookups = psycopg.connect(sys.argv[1])
other = psycopg.connect(sys.argv[1])
share_priority(lookups)
policy = lambda c: os.sched_getscheduler(c.info.backend_pid) & ~os.SCHED_RESET_ON_FORK
print(policy(lookups), policy(other))
"""


def _policies(conninfo: str, mode: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, conninfo, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lookups, other = done.stdout.split()
    return int(lookups), int(other)


def test_a_realtime_process_gets_a_realtime_backend(local_postgres: LocalStore) -> None:
    """Each case runs in a child process: the test session itself stays at normal priority."""
    conninfo = local_postgres.server.store_conninfo()
    assert _policies(conninfo, "rt") == (
        os.SCHED_RR,
        os.SCHED_OTHER,
    )  # CI runs as root: the privilege is there
    assert _policies(conninfo, "normal") == (os.SCHED_OTHER, os.SCHED_OTHER)


def _copy_of_customer_profile(store: FeatureStore, prefix: str) -> FeatureView:
    """A new view shaped like customer_profile (its own online table), named ``prefix_<random>``."""
    base = store.get_feature_view("customer_profile")
    return FeatureView(
        name=f"{prefix}_{uuid.uuid4().hex[:8]}",
        entities=[store.get_entity("customer")],
        ttl=base.ttl,
        schema=base.schema,
        source=base.stream_source or base.batch_source,
        online=True,
    )


def test_a_new_table_is_planned_on_its_index_from_its_first_rows(postgres_store: FeatureStore) -> None:
    """Postgres without statistics planned a 100-key lookup of a freshly loaded table as a scan of all of it
    (until autovacuum's first analyze); the sink's first write gives it statistics."""
    view = _copy_of_customer_profile(postgres_store, "probe")
    postgres_store.apply([view])
    try:
        now = datetime.now(UTC)
        features = {"country": "NL", "segment": "gold", "credit_limit": 1.0, "birth_date": now, "email": "h"}
        rows = [
            SinkRow(view.name, UPSERT, {"customer_id": i}, features, now, i, "u", "t") for i in range(3000)
        ]
        sink = open_online_sink(postgres_store)
        try:
            sink.add(rows)
            sink.flush()
            table = compute_table_id(postgres_store.project, view, False)
            keys = [
                serialize_entity_key(
                    EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=i)]), 3
                )
                for i in range(0, 3000, 30)
            ]
            with sink.connection.cursor() as cur:  # type: ignore[attr-defined]
                cur.execute(
                    f'EXPLAIN SELECT entity_key, feature_name, value, event_ts FROM "{table}" '
                    "WHERE entity_key = ANY(%b) AND feature_name = ANY(%s)",
                    (keys, ["segment", "credit_limit", "country"]),
                )
                plan = "\n".join(r[0] for r in cur.fetchall())
            sink.connection.rollback()  # type: ignore[attr-defined]
        finally:
            sink.close()
        assert "Seq Scan" not in plan and "Index" in plan, plan
    finally:
        postgres_store.apply([], objects_to_delete=[view], partial=False)


def test_apply_through_a_store_that_outlived_a_server_restart(
    postgres_store: FeatureStore, local_postgres: LocalStore
) -> None:
    """`apply` on a FeatureStore whose online-store connection predates a restart of the server reconnects
    (CI once failed here with AdminShutdown: an earlier test had killed and restarted the server)."""
    from tests.unit.test_store_killed_in_a_flush import kill

    postgres_store.get_online_features(
        features=["customer_profile:segment"], entity_rows=[{"customer_id": 1}]
    )  # the store's connection, opened before the restart
    kill(local_postgres)
    local_postgres.server.start()
    view = _copy_of_customer_profile(postgres_store, "after")
    postgres_store.apply([view])
    assert postgres_store.get_feature_view(view.name).name == view.name
