"""``featurectl stack up|down|status``: the local stack as one unit, started in dependency order.

Order: Postgres, Kafka, Connect (Connect needs the broker; the connector, deployed later, needs
both). ``up`` is idempotent: what runs already is left alone. ``down`` stops in reverse order,
by pid, gracefully and then harder, and keeps data unless asked to wipe.

Extras (``FEATURECTL_STACK_EXTRAS`` or ``stack up --with``) are production stores run locally:
``online-postgres`` (Postgres + pgvector online store, stack/online_postgres.py), ``redis``
(stack/redis.py) and ``milvus`` (milvus-lite, stack/milvus.py; also started when the feature repo's
feature_store.yaml declares the Milvus online store); and ``prometheus`` (stack/prometheus.py, also ``FEATURECTL_MONITORING=1``). ``down`` and
``status`` cover every extra that runs, whichever way it was started.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field

import requests

from connectors.definition import ConnectorDefinition, load_definition
from core.errors import FeatureCtlError
from core.settings import Settings, ensure_secrets_file
from stack.connect import ConnectWorker
from stack.extras import ensure_extra
from stack.jars import ensure_jars, jars_for
from stack.kafka import KafkaBroker
from stack.milvus import MilvusServer
from stack.online_postgres import OnlinePostgres
from stack.postgres import Postgres
from stack.prometheus import PrometheusServer
from stack.redis import RedisServer

logger = logging.getLogger(__name__)
GENERATED_SECRETS = (
    "pg_admin_password",
    "pg_app_password",
    "debezium_password",
    "online_pg_admin_password",
    "online_pg_password",
    "redis_password",
    "kafka_sasl_password",
    "pii_hash_key",
)
CORE = ("connect", "kafka", "postgres")  # stop order
EXTRAS = ("online-postgres", "redis", "milvus", "prometheus")
STORE_EXTRAS = ("online-postgres", "redis", "milvus")  # the production online stores among the extras
PYTHON_EXTRAS = {"online-postgres": "stores", "redis": "stores", "milvus": "milvus"}
"""The pyproject.toml extra a service's online store needs (its driver; for online-postgres also its server)."""


@dataclass
class ServiceStatus:
    name: str
    state: str  # RUNNING, STOPPED, UNHEALTHY
    pid: int | None
    address: str
    detail: str = ""


@dataclass
class StackStatus:
    services: list[ServiceStatus] = field(default_factory=list)
    connectors: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


Service = Postgres | KafkaBroker | ConnectWorker | RedisServer | MilvusServer | PrometheusServer


def _declares_milvus(settings: Settings) -> bool:
    """Whether the feature repo's feature_store.yaml puts the online store in a local Milvus."""
    import yaml

    path = settings.feature_repo / "feature_store.yaml"
    try:
        online = (yaml.safe_load(path.read_text()) or {}).get("online_store") or {}
    except (OSError, yaml.YAMLError):
        return False  # feast-apply reports a broken file; the stack starts without it
    if not isinstance(online, dict) or online.get("type") != "stores.milvus.feast.MilvusOnlineStore":
        return False
    # The local server's address (a uri, or Feast's host and port, 19530 by default); anything else is the
    # user's own Milvus.
    address = str(online.get("uri") or f"{online.get('host', '')}:{online.get('port', 19530)}")
    return address.replace("localhost", "127.0.0.1").endswith(f"127.0.0.1:{settings.milvus_port}")


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jars = jars_for(settings)
        self.postgres = Postgres(settings)
        self.kafka = KafkaBroker(settings, self.jars)
        self.connect = ConnectWorker(settings, self.jars)
        self.online_postgres = OnlinePostgres(settings)
        self.redis = RedisServer(settings)
        self.milvus = MilvusServer(settings)
        self.prometheus = PrometheusServer(settings)

    def extras(self, requested: tuple[str, ...] = ()) -> list[str]:
        """The extra services asked for in settings and in ``requested``, checked."""
        names = [n.strip() for n in self.settings.stack_extras.split(",") if n.strip()] + list(requested)
        if self.settings.monitoring:
            names.append("prometheus")
        if _declares_milvus(self.settings):
            names.append("milvus")
        unknown = sorted(set(names) - set(EXTRAS))
        if unknown:
            raise FeatureCtlError(
                f"unknown stack service(s) {', '.join(unknown)}",
                f"FEATURECTL_STACK_EXTRAS / --with take: {', '.join(EXTRAS)}",
            )
        return [n for n in EXTRAS if n in names]

    def service(self, name: str) -> Service:
        services: dict[str, Service] = {
            "postgres": self.postgres,
            "kafka": self.kafka,
            "connect": self.connect,
            "online-postgres": self.online_postgres,
            "redis": self.redis,
            "milvus": self.milvus,
            "prometheus": self.prometheus,
        }
        return services[name]

    def install(self, extras: tuple[str, ...] = ()) -> None:
        """Everything ``up`` needs on disk: Postgres binaries, the JVM jars, and for each extra service the
        Python packages its store needs (pyproject.toml's extra: the demo's install has none)."""
        self.postgres.ensure_installed()
        for service, extra in PYTHON_EXTRAS.items():
            if service in self.extras(extras):
                ensure_extra(extra)
        if "online-postgres" in self.extras(extras):
            self.online_postgres.ensure_installed()
        if "redis" in self.extras(extras):
            self.redis.ensure_installed()
        if "milvus" in self.extras(extras):
            self.milvus.ensure_installed()
        if "prometheus" in self.extras(extras):
            self.prometheus.ensure_installed()
        self.jars = ensure_jars(self.settings)

    def up(self, connector: ConnectorDefinition | None = None, extras: tuple[str, ...] = ()) -> float:
        """Start every service not yet running; returns seconds taken."""
        started = time.monotonic()
        try:
            # 0700 from creation: it holds the secrets file, Kafka's logs and the services' logs.
            self.settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise FeatureCtlError(
                f"cannot create the data directory {self.settings.data_dir}: {exc.strerror}",
                "set FEATURECTL_DATA_DIR to a directory you can write",
            ) from None
        # Generated once; passwords set in the environment take precedence (Settings.secret).
        ensure_secrets_file(self.settings.secrets_file, GENERATED_SECRETS)
        wanted = self.extras(extras)
        self.install(extras)
        self.postgres.start()
        self.postgres.bootstrap(connector or load_definition())
        if "online-postgres" in wanted:
            self.online_postgres.start()
            self.online_postgres.bootstrap()
        if "redis" in wanted:
            self.redis.start()
        if "milvus" in wanted:
            self.milvus.start()
        self.kafka.start()
        self.connect.start()
        if "prometheus" in wanted:
            self.prometheus.start()
        return time.monotonic() - started

    def down(self, wipe: bool = False, services: tuple[str, ...] = ()) -> list[str]:
        """Stop services (reverse start order; all when none are named); with ``wipe`` also delete
        the data directory."""
        services = services or (*EXTRAS, *CORE)
        stopped: list[str] = []
        for name in (*EXTRAS, *CORE):
            if name in services and self.service(name).stop():
                stopped.append(name)
        if wipe and set(services) >= set(CORE):
            # Clusters may live outside the data directory (stack.pg_location).
            self.online_postgres.wipe()
            self.redis.wipe()
            self.milvus.wipe()
            self.prometheus.wipe()
            self.postgres.wipe()
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)
            logger.info("wiped %s", self.settings.data_dir)
            # The feature stores derive from the wiped database. They must go too: a new cluster's
            # WAL positions start low again, and the online store orders changes by them.
            derived = self.settings.feature_repo / "data"
            if derived.exists():
                shutil.rmtree(derived, ignore_errors=True)
                logger.info("wiped %s (feature stores of the wiped database)", derived)
        elif wipe:
            for name in services:
                self.service(name).wipe()
                logger.info("wiped the data of %s", name)
        return stopped

    def status(self) -> StackStatus:
        s = self.settings
        out = StackStatus()
        checks = [
            (self.postgres.name, self.postgres.pid(), f"127.0.0.1:{s.pg_port}", self.postgres.ready),
            (self.kafka.name, self.kafka.daemon.pid(), s.bootstrap_servers, self.kafka.ready),
            (self.connect.name, self.connect.daemon.pid(), s.connect_rest_url, self.connect.ready),
        ]
        online = self.online_postgres
        if "online-postgres" in self.extras() or online.pid() is not None:
            checks.append((online.name, online.pid(), f"127.0.0.1:{s.online_pg_port}", online.ready))
        if "redis" in self.extras() or self.redis.pid() is not None:
            checks.append((self.redis.name, self.redis.pid(), f"127.0.0.1:{s.redis_port}", self.redis.ready))
        if "milvus" in self.extras() or self.milvus.pid() is not None:
            checks.append((self.milvus.name, self.milvus.pid(), self.milvus.uri, self.milvus.ready))
        prom = self.prometheus
        if "prometheus" in self.extras() or prom.pid() is not None:
            checks.append((prom.name, prom.pid(), prom.url, prom.ready))
        for name, pid, address, probe in checks:
            if pid is None:
                out.services.append(ServiceStatus(name, "STOPPED", None, address))
            else:
                healthy = probe()
                out.services.append(
                    ServiceStatus(
                        name,
                        "RUNNING" if healthy else "UNHEALTHY",
                        pid,
                        address,
                        "" if healthy else "process alive but not answering",
                    )
                )
        if out.services[2].state == "RUNNING":
            out.connectors = _connector_states(s.connect_rest_url)
        return out


def _connector_states(base: str) -> list[dict[str, object]]:
    try:
        data = requests.get(f"{base}/connectors?expand=status", timeout=5).json()
    except (requests.RequestException, ValueError):
        return []
    result = []
    for name, info in sorted(data.items()):
        st = info.get("status", {})
        result.append(
            {
                "name": name,
                "state": st.get("connector", {}).get("state", "UNKNOWN"),
                "tasks": [{"id": t.get("id"), "state": t.get("state")} for t in st.get("tasks", [])],
            }
        )
    return result
