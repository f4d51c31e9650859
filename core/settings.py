"""Typed settings for the whole platform, read from the environment and an optional env file.

Every field can be set as ``FEATURECTL_<FIELD>`` in the environment, in the settings file (``featurectl.env``
in the working directory, or the file named by ``FEATURECTL_SETTINGS_FILE``), or as a file named like the
variable in the directory ``FEATURECTL_SECRETS_DIR`` names (how Compose secrets and Kubernetes Secret volumes
hand a container its passwords; the image sets it: Dockerfile). Unknown keys are rejected in all three
places, so a typo never silently falls back to a default. Secrets are never committed: passwords come from
the environment, from secret files, or from the secrets file that ``featurectl stack up`` generates under
the data directory (mode 0600).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

logger = logging.getLogger(__name__)
ENV_PREFIX = "FEATURECTL_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Name the settings file and the secret files' directory; not fields, so they are allowed next to the fields.
SETTINGS_FILE_VAR = f"{ENV_PREFIX}SETTINGS_FILE"
SECRETS_DIR_VAR = f"{ENV_PREFIX}SECRETS_DIR"


class Settings(BaseSettings):
    """Where the services run and how to reach them. Defaults describe the local stack."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", case_sensitive=False, validate_default=True
    )

    # --- local stack: where it lives -------------------------------------------------------
    data_dir: Path = Field(
        PROJECT_ROOT / ".stack",
        description="Data directory of the local stack: Postgres cluster, Kafka log dirs, logs, pid files.",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "featurectl",
        description="Cache for the JVM jars downloaded from Maven Central (shared by all checkouts).",
    )
    delta_spark_version: str = Field(
        "4.4.0",
        description="Delta Lake's Spark jars (delta-spark for Spark 4.2, delta-storage) the Spark offline store "
        "reads the history with; `featurectl stack install --spark` fetches them from Maven Central.",
    )
    pg_clusters_dir: Path = Field(
        Path("/var/lib/featurectl/postgres"),
        description="When featurectl runs as root: where local Postgres clusters live, one directory "
        "per data directory (Postgres runs as the `postgres` OS user, which must be able to traverse "
        "this path; the data directory links to its cluster). Unused by other users.",
    )
    kafka_version: str = Field("4.3.1", description="Apache Kafka version (broker and Connect).")
    debezium_version: str = Field(
        "3.7.0.Final", description="Debezium release; must be built against kafka_version."
    )
    postgres_version: int = Field(15, description="PostgreSQL major version (Debian package).")
    kafka_heap: str = Field("512m", description="Max heap of the Kafka broker JVM (-Xmx).")
    connect_heap: str = Field("768m", description="Max heap of the Kafka Connect JVM (-Xmx).")
    connect_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness of the local Kafka Connect (Debezium), its own and its session's (autogroup): "
        "on a host shared with `featurectl serve`, lookups get the CPU first and capture lags instead; "
        "0 = equal shares.",
    )
    startup_timeout_s: float = Field(120.0, description="How long `stack up` waits for each service.")

    # --- Postgres ----------------------------------------------------------------------------
    pg_host: str = Field("127.0.0.1", description="Host the platform connects to Postgres on.")
    pg_port: int = Field(25432, description="Postgres port (not 5432, to leave a system Postgres alone).")
    pg_database: str = Field("shop", description="Application database whose tables are captured.")
    pg_admin_user: str = Field("postgres", description="Superuser that bootstraps the local cluster.")
    pg_admin_password: SecretStr | None = Field(None, description="Password of pg_admin_user.")
    pg_app_user: str = Field("shop_app", description="Role that owns and writes the demo tables.")
    pg_app_password: SecretStr | None = Field(None, description="Password of pg_app_user.")
    debezium_user: str = Field(
        "debezium", description="Least-privilege replication role Debezium connects as (not superuser)."
    )
    debezium_password: SecretStr | None = Field(None, description="Password of debezium_user.")
    connect_pg_host: str | None = Field(
        None,
        description="Host Kafka Connect uses to reach Postgres, when it differs from pg_host "
        "(for example `postgres` inside docker-compose). Defaults to pg_host.",
    )
    connect_pg_port: int | None = Field(
        None, description="Port Kafka Connect uses to reach Postgres. Defaults to pg_port."
    )
    connect_debezium_password: str = Field(
        "${env:FEATURECTL_DEBEZIUM_PASSWORD}",
        description="What `connector deploy` sends Connect as database.password: a config-provider reference "
        "the Connect workers resolve, so Connect's config topic and REST API never hold the password. The "
        "default reads the workers' environment variable (EnvVarConfigProvider, set up by `featurectl stack up` "
        "and docker-compose); e.g. ${file:/etc/connect/secrets.properties:debezium_password} for "
        "FileConfigProvider. `inline` sends the password itself (any Connect; its REST API then returns it).",
    )

    # --- Kafka and Connect ---------------------------------------------------------------------
    kafka_port: int = Field(29092, description="Kafka broker listener port (not 9092).")
    kafka_controller_port: int = Field(29093, description="KRaft controller listener port.")
    kafka_sasl_port: int = Field(
        29094,
        description="The local broker's second listener, SASL_PLAINTEXT with SCRAM-SHA-256/512, user "
        "`featurectl` (password kafka_sasl_password in the secrets file): how clients talk to a broker "
        "that requires authentication (see FEATURECTL_KAFKA_SECURITY_PROTOCOL).",
    )
    connect_port: int = Field(28083, description="Kafka Connect REST port (not 8083).")
    kafka_bootstrap: str | None = Field(
        None, description="Bootstrap servers of an existing Kafka. Defaults to the local broker."
    )
    connect_url: str | None = Field(
        None, description="REST URL of an existing Kafka Connect. Defaults to the local worker."
    )

    # --- production online stores, run by the local stack on request ---------------------------
    stack_extras: str = Field(
        "",
        description="Extra services `featurectl stack up` runs, comma-separated: an online store's local server "
        "(each store folder names its own: online-postgres, redis, milvus) or prometheus (monitoring). "
        "Also `stack up --with NAME`.",
    )
    # Each store's own (ports, passwords) come from stores/<name>/settings.py: see the end of this file.

    # --- serving ---------------------------------------------------------------------------
    serve_host: str = Field("127.0.0.1", description="Address the Feast feature server listens on.")
    serve_port: int = Field(6566, description="Port of the Feast feature server (`featurectl serve`).")
    serve_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes of `featurectl serve` (one per core serves the most lookups; "
        "docs/serving.md).",
    )
    serve_tls_key: Path | None = Field(
        None,
        description="Private key (PEM) of the feature server's certificate: with serve_tls_cert, "
        "`featurectl serve` answers HTTPS only (Feast's own TLS).",
    )
    serve_tls_cert: Path | None = Field(
        None,
        description="Certificate (PEM, the chain after it) `featurectl serve` presents; with serve_tls_key.",
    )
    serving_rt_priority: int = Field(
        1,
        ge=0,
        le=99,
        description="Real-time (SCHED_RR) priority of what a lookup waits on: `featurectl serve`'s feature "
        "server and the local Redis. On a host where ingest keeps the cores busy, lookups then never wait "
        "for a core (needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO; without, a warning says so); "
        "0 = normal scheduling.",
    )
    ui_host: str = Field("127.0.0.1", description="Address Feast's web UI listens on (`featurectl ui`).")
    ui_port: int = Field(8888, description="Port of Feast's web UI (`featurectl ui`; Feast's own default).")

    # --- stream processor ------------------------------------------------------------------
    feature_repo: Path = Field(
        PROJECT_ROOT / "feature_repo", description="The Feast repository (feature_store.yaml)."
    )
    suites_dir: Path = Field(
        PROJECT_ROOT / "validation" / "suites",
        description="Great Expectations suites, one <feature_view>.json each.",
    )
    processor_group: str = Field(
        "featurectl-processor", description="Consumer group of the stream processor."
    )
    dlq_topic: str = Field(
        "featurectl.dlq", description="Dead-letter topic for records that cannot be materialised."
    )
    batch_max_rows: int = Field(
        5000,
        description="Largest micro-batch the processor polls (under load; at low rates a batch is what arrived).",
    )
    atomic_transactions: bool = Field(
        True,
        description="Readers of the online store see each source transaction whole or not at all "
        "(docs/processor.md, Transactions); false: each row is visible as soon as it is written (cheaper, "
        "per-row last-write-wins like other feature stores).",
    )
    txn_max_rows: int = Field(
        100_000,
        ge=1,
        description="Rows of one source transaction the online store holds out of sight until all of it is "
        "written (docs/processor.md, Transactions); a larger transaction is made visible as it comes, "
        "without atomicity, and counted (featurectl_transactions_released_partial_total).",
    )
    txn_max_wait_s: float = Field(
        600.0,
        gt=0,
        description="How long the oldest source transaction waiting (its END read) may wait for the rest of "
        "its changes before it is made visible with what arrived (a change read before the rule ran, or lost).",
    )
    batch_linger_ms: int = Field(
        0,
        description="Extra wait for more messages once a batch has some (0: hand on what has arrived).",
    )
    processor_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness `featurectl process` runs at: on a host shared with model services or "
        "`feast serve`, lookups get the CPU first and ingest takes the rest (0: same priority).",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=10_000,
        description="Longest one batch may take; a processor slower than this loses its partitions to the "
        "group's other copies and is fenced off the stores (streams/fencing.py). At least 10000 "
        "(the session timeout).",
    )

    # --- Kafka client security (every client: processor, dead letters, tail, jobs) --------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How clients talk to kafka_bootstrap: SASL_SSL for managed Kafka (TLS + SASL), "
        "SSL for TLS (with client certificates if given), SASL_PLAINTEXT for SASL on a private network.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with a SASL_* protocol): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (or kafka_sasl_password= in the secrets file)."
    )
    kafka_ssl_ca_location: Path | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates (default: the system's)."
    )
    kafka_ssl_certificate_location: Path | None = Field(
        None, description="PEM client certificate, for brokers that require TLS client authentication."
    )
    kafka_ssl_key_location: Path | None = Field(
        None, description="PEM private key of the client certificate."
    )
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of the client key, if any.")

    # --- PII (streams/pii.py) --------------------------------------------------------------------
    pii_hash_key: SecretStr | None = Field(
        None,
        description="Key of the HMAC-SHA256 that `pii.<column> = hash` applies (or pii_hash_key= in the secrets "
        "file, generated by `featurectl stack up`). The same on every processor and job host; changing it "
        "changes every hashed value.",
    )

    # --- monitoring (monitoring/) ---------------------------------------------------------------
    metrics_host: str = Field(
        "127.0.0.1", description="Address the /metrics endpoints listen on (--metrics-port)."
    )
    wal_retained_alert_bytes: int = Field(
        1024**3,
        gt=0,
        description="Replication-slot WAL retained above this needs action: `featurectl health` fails, the "
        "processor warns (also at 80% of Postgres' max_slot_wal_keep_size, if that is lower).",
    )
    source_watch_interval_s: float = Field(
        15.0, gt=0, description="How often the processor probes the replication slot and the connector."
    )
    monitoring: bool = Field(
        False,
        description="`featurectl stack up` also runs Prometheus (Debian package) with the alert rules, scraping "
        "the processor, the jobs and `featurectl serve` (same as `stack up --with prometheus`).",
    )
    prometheus_port: int = Field(
        29090, description="Port of the local Prometheus (127.0.0.1; docker-compose's too)."
    )
    prometheus_scrape_interval_s: float = Field(
        15.0, gt=0, description="Scrape and rule-evaluation interval of the local Prometheus."
    )
    keycloak_version: str = Field(
        "26.7.3",
        description="Keycloak release (Maven Central's keycloak-quarkus-dist) of the local OIDC provider "
        "(`featurectl stack up --with keycloak`; docs/serving.md, authentication).",
    )
    keycloak_port: int = Field(29180, description="Port of the local Keycloak (127.0.0.1).")
    keycloak_heap: str = Field("512m", description="Max heap of the local Keycloak JVM (-Xmx).")
    keycloak_admin_password: SecretStr | None = Field(
        None,
        description="Password of the local Keycloak's bootstrap admin `admin` (or keycloak_admin_password= in "
        "the secrets file, generated by `featurectl stack up`).",
    )

    @property
    def delta_jars_dir(self) -> Path:
        """Where `featurectl stack install --spark` puts Delta Lake's Spark jars (stores/history/spark_store.py)."""
        return self.cache_dir / "jvm" / f"delta-spark-{self.delta_spark_version}"

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    def kafka_client(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings every client starts from: bootstrap servers and security, plus ``extra``."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        protocol = self.kafka_security_protocol
        if protocol != "PLAINTEXT":
            conf["security.protocol"] = protocol
        if protocol.startswith("SASL"):
            if not self.kafka_sasl_mechanism or not self.kafka_sasl_username:
                raise ConfigError(
                    f"FEATURECTL_KAFKA_SECURITY_PROTOCOL={protocol} needs a SASL mechanism and user",
                    "set FEATURECTL_KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), "
                    "FEATURECTL_KAFKA_SASL_USERNAME and FEATURECTL_KAFKA_SASL_PASSWORD",
                )
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username
            conf["sasl.password"] = self.require_secret("kafka_sasl_password")
        elif self.kafka_sasl_mechanism:
            raise ConfigError(
                f"FEATURECTL_KAFKA_SASL_MECHANISM is set but the protocol is {protocol}: SASL would not be used",
                "set FEATURECTL_KAFKA_SECURITY_PROTOCOL to SASL_SSL or SASL_PLAINTEXT, or unset the mechanism",
            )
        if protocol.endswith("SSL"):
            for key, path in (
                ("ssl.ca.location", self.kafka_ssl_ca_location),
                ("ssl.certificate.location", self.kafka_ssl_certificate_location),
                ("ssl.key.location", self.kafka_ssl_key_location),
            ):
                if path is not None:
                    if not path.is_file():
                        raise ConfigError(
                            f"{key.replace('.', '_')} {path} is not a file",
                            f"set FEATURECTL_KAFKA_{key.replace('.', '_').upper()} to a readable PEM file",
                        )
                    conf[key] = str(path)
            if self.kafka_ssl_key_password is not None:
                conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        conf["error_cb"] = _kafka_error(self.bootstrap_servers, protocol)
        return {**conf, **extra}

    @property
    def connect_rest_url(self) -> str:
        return (self.connect_url or f"http://127.0.0.1:{self.connect_port}").rstrip("/")

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / "secrets.env"

    def secret(self, field: str) -> str | None:
        """The password in ``field``: from the environment/settings file, else the secrets file."""
        value = getattr(self, field)
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return read_secrets_file(self.secrets_file).get(field)

    def require_secret(self, field: str) -> str:
        value = self.secret(field)
        if not value:
            env = f"{ENV_PREFIX}{field.upper()}"
            raise ConfigError(
                f"no password for {field}",
                f"set {env} in the environment or the settings file, or run `featurectl stack up` "
                f"to generate the local stack's passwords in {self.secrets_file}",
            )
        return value


def _kafka_error(bootstrap: str, protocol: str) -> Any:
    """An ``error_cb`` that turns refused credentials into a ConfigError (raised from the client's
    poll/consume, so the command stops saying why) instead of librdkafka retrying them for ever."""
    log = logging.getLogger("kafka.client")

    def on_error(err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            raise ConfigError(
                f"Kafka at {bootstrap} refused the credentials ({protocol}): {err.str()}",
                "check FEATURECTL_KAFKA_SASL_USERNAME, FEATURECTL_KAFKA_SASL_PASSWORD (or kafka_sasl_password "
                "in the secrets file) and FEATURECTL_KAFKA_SASL_MECHANISM",
            )
        if err.code() == KafkaError._SSL:
            raise ConfigError(
                f"TLS with Kafka at {bootstrap} failed: {err.str()}",
                "check FEATURECTL_KAFKA_SSL_CA_LOCATION (the CA that signed the brokers' certificates) and "
                "that the bootstrap address is a TLS listener",
            )
        log.log(logging.ERROR if err.fatal() else logging.DEBUG, "kafka client: %s", err.str())

    return on_error


def export_store_secrets(settings: Settings) -> None:
    """Put the online stores' passwords where feature_store.yaml reads them (``${FEATURECTL_ONLINE_PG_PASSWORD}``,
    ``${FEATURECTL_REDIS_PASSWORD}``, expanded by Feast), unless the environment has them; subprocesses inherit them.
    Which: the fields a store's settings mark ``exported`` (stores/<name>/settings.py)."""
    for field in _store_secret_fields():
        name = f"{ENV_PREFIX}{field.upper()}"
        if name not in os.environ:
            value = settings.secret(field)
            if value:
                os.environ[name] = value


def read_secrets_file(path: Path) -> dict[str, str]:
    """Parse ``KEY=value`` lines of a secrets file; a missing file is empty."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip().lower()] = value.strip()
    return out


def ensure_secrets_file(path: Path, fields: tuple[str, ...]) -> dict[str, str]:
    """Create (or complete) a 0600 secrets file with a random password for each field."""
    current = read_secrets_file(path)
    missing = [f for f in fields if f not in current]
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        for field in missing:
            current[field] = secrets.token_urlsafe(18)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# generated by featurectl stack up; never commit this file\n")
            fh.writelines(f"{k}={v}\n" for k, v in sorted(current.items()))
    return current


def _settings_file() -> Path | None:
    explicit = os.environ.get(SETTINGS_FILE_VAR)
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise ConfigError(
                f"settings file {path} does not exist", f"create it or unset {SETTINGS_FILE_VAR}"
            )
        return path
    default = Path.cwd() / "featurectl.env"
    return default if default.exists() else None


def _check_unknown_env(known: set[str]) -> None:
    # pydantic-settings ignores unknown prefixed variables in the environment; a typo such as
    # FEATURECTL_KAFKA_PROT would silently leave the default in place, so reject them here.
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in (SETTINGS_FILE_VAR, SECRETS_DIR_VAR):
            continue
        field = upper[len(ENV_PREFIX) :].lower()
        if field not in known:
            close = difflib.get_close_matches(field, sorted(known), n=1)
            hint = f"did you mean {ENV_PREFIX}{close[0].upper()}?" if close else "unset it"
            raise ConfigError(f"unknown setting {name} in the environment", hint)


def _secrets_dir(known: set[str]) -> Path | None:
    """The directory of secret files, when ``FEATURECTL_SECRETS_DIR`` names one that exists (a container
    given no secrets has none: its settings then come from the environment alone). A file there that names
    no setting is refused, like an unknown variable; hidden entries are Kubernetes' own (``..data``)."""
    value = os.environ.get(SECRETS_DIR_VAR)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        logger.debug("%s=%s: no such directory, no secret files read", SECRETS_DIR_VAR, path)
        return None
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        field = entry.name.lower().removeprefix(ENV_PREFIX.lower())
        if not entry.name.lower().startswith(ENV_PREFIX.lower()) or field not in known:
            close = difflib.get_close_matches(field, sorted(known), n=1)
            hint = f"rename it {ENV_PREFIX}{close[0].upper()}" if close else "remove it"
            raise ConfigError(
                f"secret file {entry} names no setting (files there are named like the variable, "
                f"{ENV_PREFIX}<SETTING>)",
                hint,
            )
    return path


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, the settings file and the secret files, rejecting unknown keys."""
    known = set(Settings.model_fields)
    _check_unknown_env(known)
    env_file = _settings_file()
    secrets_dir = _secrets_dir(known)
    try:
        return Settings(_env_file=env_file, _secrets_dir=secrets_dir, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                bare = key.lower().removeprefix(ENV_PREFIX.lower())
                close = difflib.get_close_matches(bare, sorted(known), n=1)
                hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}?)" if close else ""
                problems.append(f"unknown setting {key!r}{hint}")
            else:
                problems.append(f"{ENV_PREFIX}{key.upper()}: {err['msg']}")
        where = f"the environment or {env_file}" if env_file else "the environment"
        raise ConfigError("invalid settings: " + "; ".join(problems), f"correct them in {where}") from None


# --- each store's own settings --------------------------------------------------------------------
# A store folder (stores/<name>/) may declare its settings in settings.py: a pydantic model named by SETTINGS,
# importing nothing of ours. They join the platform's, so FEATURECTL_REDIS_PORT is read, checked and
# documented like every other setting, and adding a store touches only its folder.
StoreModel = TypeVar("StoreModel", bound=BaseModel)


def _store_models() -> tuple[type[BaseModel], ...]:
    found = []
    for path in sorted((PROJECT_ROOT / "stores").glob("*/settings.py")):
        module = importlib.import_module(f"stores.{path.parent.name}.settings")
        found.append(module.SETTINGS)
    return tuple(found)


STORE_MODELS = _store_models()


def _store_secret_fields() -> list[str]:
    return [
        name
        for model in STORE_MODELS
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("exported")
    ]


def store_settings(settings: Settings, model: type[StoreModel]) -> StoreModel:
    """``settings`` as the typed part a store declared (stores/<name>/settings.py)."""
    if not isinstance(settings, model):
        raise TypeError(f"these settings lack {model.__name__}: build them with load_settings()")
    return settings


if not TYPE_CHECKING:
    # The class everyone constructs: the platform's fields and every store's. Typed code sees the platform's
    # (the class above) and reaches a store's through store_settings().
    Settings = create_model(
        "Settings", __base__=(*STORE_MODELS, Settings), __module__=__name__, __doc__=Settings.__doc__
    )
