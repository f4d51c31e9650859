"""docker-compose.yml cannot run here (no Docker engine): load it the way Docker Compose does and keep the
loaded model consistent with the local stack.

The file is loaded by compose-go v2.9.1 (the release Docker Compose v2.40.3 is built with), with Docker
Compose's project options, once per command that the file's header and the README document, in an
environment holding exactly the variables that command's documentation names. Reading the YAML ourselves
would miss what the loader does (it interpolates every service, including those of inactive profiles).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.definition import CONNECTORS_DIR, DEFAULT_CONNECTOR
from core.settings import PROJECT_ROOT, Settings, load_settings
from stack.go import find_go
from stack.jars import JvmJars
from stack.kafka import KafkaBroker
from stack.postgres import Postgres
from tests.unit.cli_args import parse_featurectl

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
LOADER_SRC = Path(__file__).resolve().parent / "compose_loader"
# The declared defaults, not whatever this process's environment says (the integration tests move ports).
DEFAULTS = Settings.model_construct()
BASE_VARS = ("FEATURECTL_PG_ADMIN_PASSWORD", "FEATURECTL_PG_APP_PASSWORD", "FEATURECTL_DEBEZIUM_PASSWORD")
BASE_SERVICES = {"postgres", "kafka", "connect"}
PRODUCT_SERVICES = {
    *("source-init", "feast-apply", "processor", "feature-server", "ui"),
    *("materialize", "compact", "verify", "drift"),
}


@dataclass(frozen=True)
class Documented:
    """One documented command: the variables it exports (on top of the base stack's) and its services."""

    exports: tuple[str, ...]
    command: str
    services: frozenset[str]
    profile: str | None = None

    @property
    def variables(self) -> tuple[str, ...]:
        return self.exports if self.profile is None else BASE_VARS + self.exports

    @property
    def export_line(self) -> str:
        return "export " + " ".join(f"{v}=..." for v in self.exports)


COMMANDS = [
    Documented(BASE_VARS, "docker compose up -d", frozenset(BASE_SERVICES)),
    Documented(
        ("FEATURECTL_ONLINE_PG_PASSWORD", "FEATURECTL_REDIS_PASSWORD"),
        "docker compose --profile stores up -d",
        frozenset(BASE_SERVICES | {"online-postgres", "redis", "milvus"}),
        profile="stores",
    ),
    Documented(
        ("GRAFANA_ADMIN_PASSWORD",),
        "docker compose --profile monitoring up -d",
        frozenset(BASE_SERVICES | {"prometheus", "grafana"}),
        profile="monitoring",
    ),
    Documented(
        ("FEATURECTL_ONLINE_PG_PASSWORD", "FEATURECTL_PII_HASH_KEY"),
        "docker compose --profile product up -d --build --scale processor=3",
        frozenset(BASE_SERVICES | {"online-postgres"} | PRODUCT_SERVICES),
        profile="product",
    ),
]
IDS = [c.profile or "base" for c in COMMANDS]


@pytest.fixture(scope="session")
def compose_load(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The loader program, built from tests/unit/compose_loader with Go (modules from the Go proxy)."""
    go = find_go(load_settings())
    assert go, (
        "these tests build Docker Compose's loader with Go as tests/unit/compose_loader/go.mod names it: "
        "`./dev.sh test` installs one (or `.venv/bin/python -m stack.go`)"
    )
    binary = tmp_path_factory.mktemp("compose") / "compose-load"
    # GOTOOLCHAIN=local: build with this Go, never one downloaded at run time.
    subprocess.run(
        [str(go), "build", "-o", str(binary), "."],
        cwd=LOADER_SRC,
        check=True,
        timeout=600,
        env={**os.environ, "GOTOOLCHAIN": "local"},
    )
    return binary


def load(binary: Path, variables: tuple[str, ...], profile: str | None) -> subprocess.CompletedProcess[str]:
    """Load the compose file as ``docker compose [--profile P] up`` would, with only ``variables`` set."""
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    env.update({v: f"secret-{v.lower()}" for v in variables})
    args = [str(binary)] + (["--profile", profile] if profile else []) + [str(COMPOSE_FILE)]
    # From an empty directory: Docker Compose would also read a .env there, which a user may not have.
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=binary.parent)


@pytest.fixture(scope="session")
def loaded(compose_load: Path) -> dict[str, dict[str, Any]]:
    """Per documented command: the loaded model and the services `up` would refuse to start."""
    out = {}
    for command, name in zip(COMMANDS, IDS, strict=True):
        result = load(compose_load, command.variables, command.profile)
        assert result.returncode == 0, f"`{command.command}` with {command.variables}: {result.stderr}"
        out[name] = json.loads(result.stdout)
    return out


def services(loaded: dict[str, dict[str, Any]], command: str = "base") -> dict[str, Any]:
    svc: dict[str, Any] = loaded[command]["project"]["services"]
    return svc


def every_service(loaded: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in IDS:
        merged.update(services(loaded, name))
    return merged


def host_ports(service: dict[str, Any]) -> set[int]:
    return {int(p["published"]) for p in service.get("ports", [])}


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_each_documented_command_loads_with_its_documented_variables(
    loaded: dict[str, dict[str, Any]], command: Documented
) -> None:
    name = command.profile or "base"
    assert set(services(loaded, name)) == command.services
    # Every service it starts has what it needs: no secret left unset.
    assert loaded[name]["start_errors"] == {}


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_the_header_and_the_readme_show_each_command_as_tested(command: Documented) -> None:
    header = "\n".join(
        line.removeprefix("#").strip()
        for line in COMPOSE_FILE.read_text().splitlines()
        if line.startswith("#")
    )
    readme = Path(PROJECT_ROOT / "README.md").read_text()
    docker_section = readme[readme.index("\n## Docker\n") :]
    docker_section = docker_section[: docker_section.index("\n## ", 1)]
    for text, where in ((header, "docker-compose.yml's header"), (docker_section, "README's Docker section")):
        assert f"{command.export_line}\n{command.command}\n" in text + "\n", where


def test_a_missing_base_variable_fails_every_command_naming_it(compose_load: Path) -> None:
    for command in COMMANDS:
        variables = tuple(v for v in command.variables if v != "FEATURECTL_DEBEZIUM_PASSWORD")
        result = load(compose_load, variables, command.profile)
        assert result.returncode != 0
        assert "required variable FEATURECTL_DEBEZIUM_PASSWORD is missing a value" in result.stderr


@pytest.mark.parametrize("command", COMMANDS[1:], ids=IDS[1:])
def test_a_profile_service_without_its_password_does_not_start_and_says_which(
    compose_load: Path, command: Documented
) -> None:
    for missing in command.exports:
        result = load(compose_load, tuple(v for v in command.variables if v != missing), command.profile)
        assert result.returncode == 0, result.stderr  # the others start
        errors = json.loads(result.stdout)["start_errors"]
        assert errors, missing
        for message in errors.values():
            assert f'environment variable "{missing}" required by secret' in message


def test_profile_services_check_an_empty_password_at_their_entrypoint(
    loaded: dict[str, dict[str, Any]],
) -> None:
    """An empty variable gives no secret file (Compose skips empty content): the service names the variable."""
    svc = every_service(loaded)
    for name, variable in (
        ("online-postgres", "FEATURECTL_ONLINE_PG_PASSWORD"),
        ("redis", "FEATURECTL_REDIS_PASSWORD"),
        ("grafana", "GRAFANA_ADMIN_PASSWORD"),
    ):
        service = svc[name]
        script = " ".join(service.get("entrypoint") or service["command"])
        secret = service["secrets"][0]["source"]
        assert f"test -s /run/secrets/{secret} ||" in script and variable in script, name
        assert (
            loaded[IDS[1] if name != "grafana" else IDS[2]]["project"]["secrets"][secret]["environment"]
            == variable
        )


def test_online_stores_match_the_local_ones(loaded: dict[str, dict[str, Any]]) -> None:
    svc = services(loaded, "stores")
    online = svc["online-postgres"]
    assert host_ports(online) == {DEFAULTS.online_pg_port}
    assert online["environment"]["POSTGRES_DB"] == DEFAULTS.online_pg_database
    assert online["environment"]["POSTGRES_USER"] == DEFAULTS.online_pg_user
    assert online["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/online_pg_password"
    assert online["image"].startswith("pgvector/pgvector:pg16")
    assert host_ports(svc["redis"]) == {DEFAULTS.redis_port}
    # Never an open Redis.
    assert '--requirepass "$(cat /run/secrets/redis_password)"' in svc["redis"]["command"][-1]
    # The port stores/milvus/server.py's milvus-lite uses.
    assert host_ports(svc["milvus"]) == {DEFAULTS.milvus_port}


def test_versions_are_pinned_to_the_local_stack(loaded: dict[str, dict[str, Any]]) -> None:
    svc = services(loaded)
    assert svc["postgres"]["image"] == f"postgres:{DEFAULTS.postgres_version}"
    assert svc["kafka"]["image"] == f"apache/kafka:{DEFAULTS.kafka_version}"
    assert svc["connect"]["image"] == f"quay.io/debezium/connect:{DEFAULTS.debezium_version}"
    pom = (PROJECT_ROOT / "stack" / "pom.xml").read_text()
    assert f"<kafka.version>{DEFAULTS.kafka_version}</kafka.version>" in pom
    assert f"<debezium.version>{DEFAULTS.debezium_version}</debezium.version>" in pom


def test_host_ports_match_local_defaults(loaded: dict[str, dict[str, Any]]) -> None:
    svc = services(loaded)
    assert host_ports(svc["postgres"]) == {DEFAULTS.pg_port}
    assert DEFAULTS.kafka_port in host_ports(svc["kafka"])
    assert host_ports(svc["connect"]) == {DEFAULTS.connect_port}
    advertised = svc["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"127.0.0.1:{DEFAULTS.kafka_port}" in advertised


def test_every_port_is_published_on_loopback_only(loaded: dict[str, dict[str, Any]]) -> None:
    for name, service in every_service(loaded).items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} on every interface"
        if service.get("network_mode") == "host":  # listens on the host's interfaces itself
            text = " ".join(service.get("command") or []) + json.dumps(service.get("environment", {}))
            assert "127.0.0.1" in text, f"{name} on the host network must listen on 127.0.0.1"


def test_postgres_settings_match_the_local_stack(loaded: dict[str, dict[str, Any]]) -> None:
    cmd = " ".join(services(loaded)["postgres"]["command"])
    compose = dict(re.findall(r"-c (\w+)=(\S+)", cmd))
    local = dict(re.findall(r"^(\w+) = '?([^'\n]*)'?$", Postgres(DEFAULTS)._server_settings(), re.M))
    for key in (
        "wal_level",
        "track_commit_timestamp",
        "max_wal_senders",
        "max_replication_slots",
        "max_slot_wal_keep_size",
    ):
        assert compose[key] == local[key], key


def test_kafka_settings_match_the_local_broker(loaded: dict[str, dict[str, Any]]) -> None:
    env = services(loaded)["kafka"]["environment"]
    local = KafkaBroker(DEFAULTS, JvmJars(Path("/nonexistent"))).properties()
    for key in (
        "num.partitions",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "group.initial.rebalance.delay.ms",
    ):
        assert str(env["KAFKA_" + key.replace(".", "_").upper()]) == str(local[key]), key


def test_connect_runs_the_connector_definitions_as_the_local_worker(
    loaded: dict[str, dict[str, Any]],
) -> None:
    connect = services(loaded)["connect"]
    env = connect["environment"]
    assert env["GROUP_ID"] == "featurectl-connect"
    # The definitions `featurectl connector deploy` sends are the ones mounted into the worker.
    assert any(
        v["type"] == "bind" and Path(v["source"]) == CONNECTORS_DIR for v in connect.get("volumes", [])
    )
    config = json.loads(DEFAULT_CONNECTOR.read_text())["config"]
    assert env["KEY_CONVERTER"] == config["key.converter"]
    assert env["VALUE_CONVERTER"] == config["value.converter"]
    assert env["CONNECT_KEY_CONVERTER_SCHEMAS_ENABLE"] == config["key.converter.schemas.enable"]
    assert env["CONNECT_VALUE_CONVERTER_SCHEMAS_ENABLE"] == config["value.converter.schemas.enable"]
    # pgoutput needs logical decoding on the source the connector reads.
    assert config["plugin.name"] == "pgoutput"
    assert "wal_level=logical" in services(loaded)["postgres"]["command"]


def test_connect_resolves_the_debezium_password_through_a_config_provider(
    loaded: dict[str, dict[str, Any]],
) -> None:
    env = services(loaded)["connect"]["environment"]
    assert env["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"].endswith("EnvVarConfigProvider")
    # What `featurectl connector deploy` sends by default resolves in that worker's environment.
    assert DEFAULTS.connect_debezium_password == "${env:FEATURECTL_DEBEZIUM_PASSWORD}"
    assert env["FEATURECTL_DEBEZIUM_PASSWORD"] == "secret-featurectl_debezium_password"


def test_no_password_literal_in_the_file() -> None:
    text = COMPOSE_FILE.read_text()
    for variable in {v for c in COMMANDS for v in c.variables}:
        assert f"secret-{variable.lower()}" not in text
    assert re.search(r"POSTGRES_PASSWORD:\s*\$\{FEATURECTL_PG_ADMIN_PASSWORD:\?", text)


# --- featurectl itself (profile "product") ------------------------------------------------------------------
def product(loaded: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: s for name, s in services(loaded, "product").items() if name in PRODUCT_SERVICES}


def featurectl_commands(service: dict[str, Any]) -> list[list[str]]:
    """The featurectl command lines a service runs: its command, or each of its `sh -c` script's."""
    entrypoint = service.get("entrypoint") or []
    if entrypoint[:2] == ["sh", "-c"]:
        return [part.split()[1:] for part in entrypoint[2].replace("exec ", "").split(" && ")]
    return [service["command"]]


def test_product_services_run_the_image_the_dockerfile_builds(loaded: dict[str, dict[str, Any]]) -> None:
    images = set()
    for name, service in product(loaded).items():
        assert Path(service["build"]["context"]) == PROJECT_ROOT, name
        assert service["build"]["dockerfile"] == "Dockerfile", name
        images.add(service["image"])
    assert len(images) == 1, images


def test_product_commands_parse_as_featurectl_commands(loaded: dict[str, dict[str, Any]]) -> None:
    """Each service's arguments are a featurectl command whose options click accepts (a typo fails here, not
    at `docker compose up`)."""
    for service in product(loaded).values():
        for args in featurectl_commands(service):
            parse_featurectl(args)


def test_product_settings_are_known_and_reach_the_base_services(
    loaded: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services(loaded, "product")
    for name, service in product(loaded).items():
        for key in list(os.environ):
            if key.startswith("FEATURECTL_"):
                monkeypatch.delenv(key)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("FEATURECTL_SECRETS_DIR")  # the container's, not this host's
        settings = load_settings()  # unknown or malformed settings raise ConfigError
        kafka = svc["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"PLAINTEXT://{settings.bootstrap_servers}" in kafka.split(","), name
        connect_port = int(svc["connect"]["ports"][0]["target"])
        assert settings.connect_rest_url == f"http://connect:{connect_port}", name
        assert (settings.pg_host, settings.pg_port) == (
            "postgres",
            int(svc["postgres"]["ports"][0]["target"]),
        )
        assert (settings.connect_pg_host, settings.connect_pg_port) == (settings.pg_host, settings.pg_port)
        volumes = {v["target"]: v for v in service["volumes"]}
        assert (
            Path(volumes["/app/feature_repo/feature_store.yaml"]["source"])
            == PROJECT_ROOT / "deploy" / "feature_store.yaml"
        )
        assert volumes["/app/feature_repo/data"]["source"] == "featuredata", (
            "every role shares one data volume"
        )
        assert settings.data_dir.is_relative_to("/app/feature_repo/data"), "job locks and records are shared"


def test_product_passwords_are_secret_files_each_service_needs(loaded: dict[str, dict[str, Any]]) -> None:
    """Passwords arrive as files named like their variables in FEATURECTL_SECRETS_DIR (Compose mounts a secret
    with a relative target at /run/secrets/<target>); only the source's setup gets the admin password."""
    secret_fields = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    given: dict[str, set[str]] = {}
    for name, service in product(loaded).items():
        assert service["environment"]["FEATURECTL_SECRETS_DIR"] == "/run/secrets"
        for secret in service.get("secrets", []):
            target = secret["target"]
            assert target.startswith("FEATURECTL_") and target[11:].lower() in secret_fields, (name, target)
            given.setdefault(target, set()).add(name)
    assert given["FEATURECTL_PG_ADMIN_PASSWORD"] == {"source-init"}
    assert given["FEATURECTL_PII_HASH_KEY"] == {"processor"}
    assert "FEATURECTL_ONLINE_PG_PASSWORD" not in {
        s["target"] for s in product(loaded)["source-init"]["secrets"]
    }


def test_the_processor_scales_and_stops_within_its_grace_period(loaded: dict[str, dict[str, Any]]) -> None:
    processor = product(loaded)["processor"]
    assert not processor.get("ports"), "a fixed host port would stop `--scale processor=3`"
    assert processor.get("container_name") is None
    # Compose's stop_grace_period, as "1m0s": the processor finishes one batch and commits well within it.
    assert processor["stop_grace_period"] in ("1m0s", "60s")
    metrics = processor["command"][processor["command"].index("--metrics-port") + 1]
    assert f"127.0.0.1:{metrics}/readyz" in " ".join(processor["healthcheck"]["test"])


def test_each_product_healthcheck_asks_its_own_server(loaded: dict[str, dict[str, Any]]) -> None:
    for name, service in product(loaded).items():
        if "healthcheck" not in service:
            assert service["restart"] == "on-failure", f"{name}: only one-shots go without a healthcheck"
            continue
        args = service["command"]
        port = re.search(r"127\.0\.0\.1:(\d+)/", " ".join(service["healthcheck"]["test"]))
        assert port, name
        listening = {args[i + 1] for i, a in enumerate(args) if a in ("--port", "--metrics-port")}
        assert port[1] in listening, (name, port[1], listening)


def test_product_ports_are_loopback_and_the_ones_prometheus_scrapes(
    loaded: dict[str, dict[str, Any]],
) -> None:
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    scraped = {
        job["job_name"]: {t for c in job["static_configs"] for t in c["targets"]}
        for job in config["scrape_configs"]
    }
    svc = product(loaded)
    assert "127.0.0.1:29465" in scraped["featurectl-serve"]
    assert {p["published"] for p in svc["feature-server"]["ports"]} >= {str(DEFAULTS.serve_port), "29465"}
    assert {p["published"] for p in svc["ui"]["ports"]} == {str(DEFAULTS.ui_port)}
    for job in ("materialize", "compact", "verify", "drift"):
        (port,) = svc[job]["ports"]
        assert f"127.0.0.1:{port['published']}" in scraped["featurectl-jobs"], job
