"""docker-compose.yml cannot run here (no Docker engine); keep it consistent with the local stack."""

import re
from pathlib import Path

import yaml

from connectors.definition import CONNECTORS_DIR
from featurectl.settings import PROJECT_ROOT, Settings
from stack.jars import JvmJars
from stack.kafka import KafkaBroker

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# The declared defaults, not whatever this process's environment says (the integration tests move ports).
DEFAULTS = Settings.model_construct()


def host_ports(service: str) -> set[int]:
    return {int(str(p).split(":")[-2]) for p in SERVICES[service].get("ports", [])}


def test_same_services() -> None:
    assert set(SERVICES) == {
        "postgres",
        "kafka",
        "connect",
        "online-postgres",
        "redis",
        "prometheus",
        "grafana",
    }
    # The production stores are opt-in there as in `featurectl stack up --with online-postgres --with redis`.
    assert SERVICES["online-postgres"]["profiles"] == SERVICES["redis"]["profiles"] == ["stores"]
    # Prometheus and Grafana (Grafana needs an admin password) are opt-in too.
    assert SERVICES["prometheus"]["profiles"] == SERVICES["grafana"]["profiles"] == ["monitoring"]


def test_online_store_matches_the_local_one() -> None:
    online = SERVICES["online-postgres"]
    assert host_ports("online-postgres") == {DEFAULTS.online_pg_port}
    assert online["environment"]["POSTGRES_DB"] == DEFAULTS.online_pg_database
    assert online["environment"]["POSTGRES_USER"] == DEFAULTS.online_pg_user
    assert online["image"].startswith("pgvector/pgvector:pg16")
    assert host_ports("redis") == {DEFAULTS.redis_port}
    assert "--requirepass" in SERVICES["redis"]["command"]  # never an open Redis


def test_versions_are_pinned_to_the_local_stack() -> None:
    assert SERVICES["postgres"]["image"] == f"postgres:{DEFAULTS.postgres_version}"
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{DEFAULTS.kafka_version}"
    assert SERVICES["connect"]["image"] == f"quay.io/debezium/connect:{DEFAULTS.debezium_version}"
    pom = (PROJECT_ROOT / "stack" / "pom.xml").read_text()
    assert f"<kafka.version>{DEFAULTS.kafka_version}</kafka.version>" in pom
    assert f"<debezium.version>{DEFAULTS.debezium_version}</debezium.version>" in pom


def test_host_ports_match_local_defaults() -> None:
    assert host_ports("postgres") == {DEFAULTS.pg_port}
    assert DEFAULTS.kafka_port in host_ports("kafka")
    assert host_ports("connect") == {DEFAULTS.connect_port}
    advertised = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"127.0.0.1:{DEFAULTS.kafka_port}" in advertised


def test_postgres_settings_match() -> None:
    cmd = " ".join(SERVICES["postgres"]["command"])
    conf = {k: v for k, v in re.findall(r"-c (\w+)=(\S+)", cmd)}
    assert conf["wal_level"] == "logical"
    assert conf["track_commit_timestamp"] == "on"  # the backfill's event times (jobs/pg_backfill.py)
    assert int(conf["max_wal_senders"]) >= 4 and int(conf["max_replication_slots"]) >= 4


def test_kafka_settings_match_local_broker() -> None:
    env = SERVICES["kafka"]["environment"]
    local = KafkaBroker(DEFAULTS, JvmJars(Path("/nonexistent"))).properties()
    for key in (
        "num.partitions",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "group.initial.rebalance.delay.ms",
    ):
        assert str(env["KAFKA_" + key.replace(".", "_").upper()]) == str(local[key]), key


def test_connect_uses_same_converters_and_mounts_connector_definitions() -> None:
    env = SERVICES["connect"]["environment"]
    assert env["CONNECT_VALUE_CONVERTER_SCHEMAS_ENABLE"] == "false"
    assert env["GROUP_ID"] == "featurectl-connect"
    assert any(v.startswith("./connectors:") for v in SERVICES["connect"]["volumes"])
    assert (CONNECTORS_DIR / "shop-postgres.json").exists()


def test_no_password_literal_in_compose() -> None:
    pw = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pw.startswith("${") and pw.endswith("}")


def test_every_port_is_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
        if service.get("network_mode") == "host":  # listens on the host's interfaces itself
            text = " ".join(str(c) for c in service.get("command", [])) + str(service.get("environment", {}))
            assert "127.0.0.1" in text, f"{name} on the host network must listen on 127.0.0.1"


def test_connect_resolves_the_debezium_password_through_a_config_provider() -> None:
    env = SERVICES["connect"]["environment"]
    assert env["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"].endswith("EnvVarConfigProvider")
    # What `featurectl connector deploy` sends by default resolves in that worker's environment.
    reference = DEFAULTS.connect_debezium_password
    assert reference == "${env:FEATURECTL_DEBEZIUM_PASSWORD}"
    assert "FEATURECTL_DEBEZIUM_PASSWORD" in env
