"""Day-2 operations against the real stack: /metrics of a running processor, the WAL watch, `featurectl health`."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import requests
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from connectors.client import ConnectClient
from connectors.definition import load_definition
from core.ports import free_port
from tests.integration.conftest import StackHandle
from tests.integration.helpers import cli, history_rows, wait_until
from tests.integration.platform import Platform


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value; {} while it does not answer."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def insert_customers(conninfo: str, n: int, bad: int = 0) -> list[int]:
    """``n`` valid customers and ``bad`` ones the customer_profile suite rejects; returns the bad ones' ids."""
    tag = uuid.uuid4().hex[:8]
    rejected = []
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO customers (email, full_name, country) "
            "SELECT 'ops-' || g || '-' || %s || '@example.com', 'Ops ' || g, 'DE' FROM generate_series(1, %s) g",
            (tag, n),
        )
        for i in range(bad):  # credit_limit below zero: the customer_profile suite rejects it
            row = conn.execute(
                "INSERT INTO customers (email, full_name, country, credit_limit) VALUES (%s, 'Bad', 'GB', -10) "
                "RETURNING id",
                (f"ops-bad-{i}-{tag}@example.com",),
            ).fetchone()
            assert row
            rejected.append(int(row[0]))
    return rejected


def test_metrics_move_as_rows_flow_the_slot_metric_follows_a_pause_and_health_names_it(
    stack: StackHandle, platform: Platform, made: list[tuple[str, int]]
) -> None:
    port = free_port()
    platform.env["FEATURECTL_SOURCE_WATCH_INTERVAL_S"] = "1"
    platform.start_processor("p", "--metrics-port", str(port))
    slot = platform.definition.slot_name

    # Rows flow: rows written and freshness observed per view, a dead letter counted by reason, lag to 0.
    made.extend(("customers", rid) for rid in insert_customers(stack.app, 300, bad=1))
    topic = platform.topic("public.customers")

    def flowed() -> bool:
        m = scrape(port)
        lags = [
            v
            for (name, labels), v in m.items()
            if name == "featurectl_consumer_lag" and ("topic", topic) in labels
        ]
        return (
            value(m, "featurectl_rows_written_total", feature_view="customer_profile") >= 300
            and value(m, "featurectl_commit_to_online_seconds_count", feature_view="customer_profile") >= 300
            and value(
                m, "featurectl_dead_letters_total", feature_view="customer_profile", reason="expectations"
            )
            >= 1
            and len(lags) == 4
            and all(v == 0 for v in lags)
        )

    wait_until(flowed, 120, "rows written, freshness and a dead letter in /metrics, lag 0 on every partition")
    m = scrape(port)
    assert value(m, "featurectl_batch_duration_seconds_count") > 0
    assert value(m, "featurectl_stage_duration_seconds_count", stage="validate") > 0
    assert value(m, "featurectl_connector_state", connector=platform.definition.name, state="RUNNING") == 1
    assert value(m, "featurectl_replication_slot_active", slot=slot) == 1

    # Its own data directory (job runs of other tests are not this platform's), the passwords given.
    env = {
        **platform.env,
        "FEATURECTL_DATA_DIR": str(platform.root / "ops"),
        **{
            f"FEATURECTL_{f.upper()}": stack.settings.require_secret(f)
            for f in ("pg_app_password", "debezium_password")
        },
    }
    health = cli("health", "--file", str(platform.definition.path), env=env)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "customer_profile" in health.stdout and "last change" in health.stdout

    # Paused connector: the slot retains the WAL of every change made meanwhile; health fails, naming it.
    client = ConnectClient(stack.settings.connect_rest_url)
    client.pause(platform.definition.name)
    wait_until(
        lambda: (
            value(
                scrape(port), "featurectl_connector_state", connector=platform.definition.name, state="PAUSED"
            )
            == 1
        ),
        60,
        "the connector's PAUSED state in /metrics",
    )
    before = value(scrape(port), "featurectl_replication_slot_retained_wal_bytes", slot=slot)
    insert_customers(stack.app, 3000)
    grown = wait_until(
        lambda: (
            (v := value(scrape(port), "featurectl_replication_slot_retained_wal_bytes", slot=slot))
            > before + 200_000
            and v
        ),
        60,
        "the slot's retained WAL to grow while the connector is paused",
    )
    health = cli("health", "--file", str(platform.definition.path), env=env)
    assert health.returncode == 1, health.stdout + health.stderr
    assert f"connector {platform.definition.name} is PAUSED" in health.stdout
    assert "featurectl connector resume" in health.stdout

    client.resume(platform.definition.name)
    wait_until(
        lambda: value(scrape(port), "featurectl_replication_slot_retained_wal_bytes", slot=slot) < grown / 2,
        120,
        "the slot's retained WAL to fall after the connector resumed",
    )
    wait_until(
        lambda: value(scrape(port), "featurectl_rows_written_total", feature_view="customer_profile") >= 3300,
        120,
        "the changes made while paused to reach the online store",
    )


def test_connect_never_holds_the_debezium_password(stack: StackHandle, platform: Platform) -> None:
    password = stack.settings.require_secret("debezium_password")
    name = platform.definition.name
    config = requests.get(f"{stack.settings.connect_rest_url}/connectors/{name}/config", timeout=10).json()
    assert config["database.password"] == "${env:FEATURECTL_DEBEZIUM_PASSWORD}"
    assert password not in json.dumps(config)
    # ... and yet the connector logged in with it: the worker resolved the reference from its environment.
    status = ConnectClient(stack.settings.connect_rest_url).status(name)
    assert status["connector"]["state"] == "RUNNING"
    assert [t["state"] for t in status["tasks"]] == ["RUNNING"]
    # Nor does Connect's config topic (what a Kafka user with read access on it would see).
    records = read_topic(stack, "_featurectl_connect_configs")
    assert records and not any(password in r for r in records)


def read_topic(stack: StackHandle, topic: str) -> list[str]:
    consumer = Consumer(
        stack.settings.kafka_client(
            **{
                "group.id": f"ops-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    out: list[str] = []
    idle = 0
    while idle < 6:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            idle += 1 if out else 0.2
            continue
        idle = 0
        out.append((msg.value() or b"").decode(errors="replace"))
    consumer.close()
    return out


def sasl_env(stack: StackHandle, **extra: str) -> dict[str, str]:
    """Client settings for the test broker's SASL_PLAINTEXT listener (SCRAM), as a managed Kafka needs."""
    return {
        "FEATURECTL_KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.settings.kafka_sasl_port}",
        "FEATURECTL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FEATURECTL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FEATURECTL_KAFKA_SASL_USERNAME": "featurectl",
        **extra,
    }


def test_processor_and_tail_work_through_a_sasl_scram_listener(
    stack: StackHandle, platform: Platform
) -> None:
    platform.env.update(sasl_env(stack))  # the password: kafka_sasl_password in the stack's secrets file
    platform.start_processor("sasl")
    email = f"sasl-{uuid.uuid4().hex[:8]}@example.com"
    with psycopg.connect(stack.app) as conn:
        row = conn.execute(
            "INSERT INTO customers (email, full_name, country, segment) VALUES (%s, 'Sasl', 'FR', 'gold') RETURNING id",
            (email,),
        ).fetchone()
    assert row
    cid = int(row[0])
    wait_until(
        lambda: platform.online("customer_profile", "customer_id", [cid], ["segment"])["segment"] == ["gold"],
        90,
        "the row, read through the SASL listener, online",
    )

    tail = cli("tail", "--file", str(platform.definition.path), "public.customers", env=platform.env)
    assert tail.returncode == 0, tail.stderr[-2000:]
    assert email in tail.stdout

    wrong = cli(
        "tail",
        "--file",
        str(platform.definition.path),
        "public.customers",
        env={**platform.env, "FEATURECTL_KAFKA_SASL_PASSWORD": "not-the-password"},
    )
    assert wrong.returncode == 1
    assert "refused the credentials" in wrong.stderr and "FEATURECTL_KAFKA_SASL_PASSWORD" in wrong.stderr


def test_db_init_on_an_existing_database_creates_only_what_is_missing(
    stack: StackHandle, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    db, app, dbz, pub = f"ops_{tag}", f"app_{tag}", f"dbz_{tag}", f"pub_{tag}"
    admin = stack.stack.postgres.admin_conninfo
    with psycopg.connect(admin("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD 'app-original'").format(sql.Identifier(app))
        )
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD 'dbz-original'").format(sql.Identifier(dbz))
        )
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(app)))
    with psycopg.connect(admin(db), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.accounts (id bigint PRIMARY KEY, email text)")
        conn.execute("CREATE TABLE public.ledger (id bigint PRIMARY KEY, amount numeric)")
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE public.ledger").format(sql.Identifier(pub)))
    definition = load_definition().derive(pub, ["public.accounts"], tmp_path / "existing.json")

    def state() -> dict[str, object]:
        with psycopg.connect(admin(db)) as conn:
            roles = conn.execute(
                "SELECT rolname, rolpassword, rolcreatedb, rolreplication FROM pg_authid "
                "WHERE rolname IN (%s, %s) ORDER BY 1",
                (app, dbz),
            ).fetchall()
            published = conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1",
                (pub,),
            ).fetchall()
            demo = conn.execute("SELECT to_regclass('public.customers')").fetchone()
        return {"roles": roles, "published": [p[0] for p in published], "demo": demo and demo[0]}

    env = {
        "FEATURECTL_PG_DATABASE": db,
        "FEATURECTL_PG_APP_USER": app,
        "FEATURECTL_DEBEZIUM_USER": dbz,
        "FEATURECTL_PG_APP_PASSWORD": "app-from-settings",
        "FEATURECTL_DEBEZIUM_PASSWORD": "dbz-from-settings",
    }
    before = state()
    dry = cli("db", "init", "--file", str(definition.path), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert f'ALTER PUBLICATION "{pub}" ADD TABLE "public"."accounts"' in dry.stdout
    assert "CREATE SCHEMA IF NOT EXISTS cdc" in dry.stdout
    assert "ROLE" not in dry.stdout.replace("SET ROLE", "") and "customers" not in dry.stdout
    assert state() == before  # a dry run changes nothing

    done = cli("db", "init", "--file", str(definition.path), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    after = state()
    assert after["roles"] == before["roles"]  # same password hashes and attributes
    assert after["published"] == ["cdc.debezium_heartbeat", "public.accounts", "public.ledger"]
    assert after["demo"] is None  # the demo schema is the local stack's, not an existing database's
    with psycopg.connect(admin(db)) as conn:
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'public.accounts', 'SELECT')", (dbz,)
        ).fetchone() == (True,)
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'public.ledger', 'SELECT')", (dbz,)
        ).fetchone() == (False,)
    again = cli("db", "init", "--file", str(definition.path), "--dry-run", env=env)
    assert "ADD TABLE" not in again.stdout and "GRANT SELECT ON" not in again.stdout  # nothing left to do

    reset = cli("db", "init", "--file", str(definition.path), "--reset-passwords", env=env)
    assert reset.returncode == 0, reset.stderr[-2000:]
    s = stack.settings
    with psycopg.connect(
        host=s.pg_host, port=s.pg_port, dbname=db, user=app, password="app-from-settings"
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (app,)
    assert state()["roles"][0][2] is True  # CREATEDB kept: attributes are never changed


def test_stack_ups_started_together_all_succeed(stack: StackHandle) -> None:
    """Hosts or bench runs calling ``stack up`` at once: each bootstrap's GRANTs used to race on the same
    catalog rows and one failed with "tuple concurrently updated"."""
    definition = load_definition()

    def bootstrap(_: int) -> str | None:
        try:
            stack.stack.postgres.bootstrap(definition)
            return None
        except psycopg.Error as exc:
            return repr(exc)

    with ThreadPoolExecutor(4) as pool:
        failures = [f for f in pool.map(bootstrap, range(40)) if f is not None]
    assert failures == []


def test_a_pii_column_is_hashed_online_offline_and_in_a_dead_letter(
    stack: StackHandle, platform: Platform, made: list[tuple[str, int]]
) -> None:
    """feature_repo/customers.py declares pii.email = hash and pii.full_name = mask."""
    key = stack.settings.require_secret("pii_hash_key").encode()
    platform.start_processor("pii")
    tag = uuid.uuid4().hex[:8]
    good, bad = f"pii-good-{tag}@example.com", f"pii-bad-{tag}@example.com"
    with psycopg.connect(stack.app) as conn:
        ids = [
            conn.execute(
                "INSERT INTO customers (email, full_name, country, credit_limit) VALUES (%s, %s, 'DE', %s) RETURNING id",
                (email, name, credit),
            ).fetchone()
            for email, name, credit in ((good, "Greta Good", 5), (bad, "Bruno Bad", -10))
        ]
    good_id, bad_id = (int(r[0]) for r in ids if r)
    made.extend([("customers", good_id), ("customers", bad_id)])
    digest = hmac.new(key, good.encode(), hashlib.sha256).hexdigest()
    wait_until(
        lambda: platform.online("customer_profile", "customer_id", [good_id], ["email"])["email"] == [digest],
        90,
        "the hashed e-mail online",
    )
    history = wait_until(
        lambda: [r for r in history_rows(platform.repo, "customer_profile") if r["customer_id"] == good_id],
        60,
        "the change in the offline history",
    )
    assert [r["email"] for r in history] == [digest]
    # What the processor wrote holds source rows: readable by its owner only (featurectl runs with umask 077).
    written = [f for f in (platform.repo / "data" / "offline" / "customer_profile").rglob("*.parquet")]
    assert written and all(f.stat().st_mode & 0o077 == 0 for f in written), [
        oct(f.stat().st_mode) for f in written
    ]
    assert stack.settings.data_dir.stat().st_mode & 0o077 == 0  # 0700 from creation
    assert stack.settings.secrets_file.stat().st_mode & 0o077 == 0
    letters = wait_until(
        lambda: [
            d
            for d in platform.dead_letters()
            if d.value and f'"id":{bad_id},'.encode() in d.value.replace(b" ", b"")
        ],
        60,
        "the bad row's dead letter",
    )
    (letter,) = letters
    after = json.loads(letter.value or b"")["after"]
    assert after["email"] == hmac.new(key, bad.encode(), hashlib.sha256).hexdigest()
    assert after["full_name"] == "B***"
    assert letter.pii == {"email": "hash", "full_name": "mask"}
    raw = (
        (letter.value or b"")
        + letter.reason.encode()
        + json.dumps(letter.failed_expectations, default=str).encode()
    )
    assert bad.encode() not in raw and b"Bruno Bad" not in raw
    assert platform.online("customer_profile", "customer_id", [bad_id], ["email"])["email"] == [None]
