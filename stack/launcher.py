"""``featurectl stack up|down|status``: the local stack as one unit, started in dependency order.

Order: Postgres, Kafka, Connect (Connect needs the broker; the connector, deployed later, needs
both). ``up`` is idempotent: what runs already is left alone. ``down`` stops in reverse order,
by pid, gracefully and then harder, and keeps data unless asked to wipe.

Extras (``FEATURECTL_STACK_EXTRAS`` or ``stack up --with``) are the online stores' local servers, each
declared by its store folder (stores/<name>/, ``KIND.local``: ``online-postgres``, ``redis``, ``milvus``; a
store may also be started because the feature repo's feature_store.yaml names its local server), and
``prometheus`` (stack/prometheus.py, also ``FEATURECTL_MONITORING=1``), and ``keycloak`` (stack/keycloak.py, the
OIDC provider; also started when feature_store.yaml's ``auth:`` names its address). ``down`` and ``status`` cover
every extra that runs, whichever way it was started.
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
from stack.extras import ensure_requirements
from stack.jars import ensure_jars, jars_for
from stack.kafka import KafkaBroker
from stack.keycloak import SECRETS as KEYCLOAK_SECRETS
from stack.keycloak import Keycloak
from stack.postgres import Postgres
from stack.prometheus import PrometheusServer
from stores.local import LocalServer
from stores.registry import local_services

logger = logging.getLogger(__name__)
STORES = local_services()  # the online stores' local servers, by name
GENERATED_SECRETS = (
    "pg_admin_password",
    "pg_app_password",
    "debezium_password",
    *(secret for kind in STORES.values() if kind.local for secret in kind.local.secrets),
    "kafka_sasl_password",
    "pii_hash_key",
    *KEYCLOAK_SECRETS,
)
CORE = ("connect", "kafka", "postgres")  # stop order
STORE_EXTRAS = tuple(STORES)  # the online stores' local servers among the extras
EXTRAS = (*STORE_EXTRAS, "prometheus", "keycloak")


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


Service = Postgres | KafkaBroker | ConnectWorker | PrometheusServer | Keycloak | LocalServer


def _declared_servers(settings: Settings) -> list[str]:
    """The local servers the feature repo's feature_store.yaml names (started without --with): the store servers
    it writes to, and the Keycloak its ``auth:`` asks for tokens from."""
    import yaml

    path = settings.feature_repo / "feature_store.yaml"
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []  # feast-apply reports a broken file; the stack starts without it
    if not isinstance(config, dict):
        return []
    online, auth = config.get("online_store") or {}, config.get("auth") or {}
    names = [
        name
        for name, kind in STORES.items()
        if isinstance(online, dict) and kind.declared_locally(settings, online)
    ]
    if isinstance(auth, dict) and str(auth.get("auth_discovery_url", "")).startswith(
        Keycloak(settings).url + "/"
    ):
        names.append("keycloak")
    return names


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jars = jars_for(settings)
        self.postgres = Postgres(settings)
        self.kafka = KafkaBroker(settings, self.jars)
        self.connect = ConnectWorker(settings, self.jars)
        self.prometheus = PrometheusServer(settings)
        self.keycloak = Keycloak(settings)
        self._stores: dict[str, LocalServer] = {}

    def store_server(self, name: str) -> LocalServer:
        """The local server of the store service ``name`` (constructed on first use: it loads its module)."""
        if name not in self._stores:
            self._stores[name] = STORES[name].server(self.settings)
        return self._stores[name]

    def extras(self, requested: tuple[str, ...] = ()) -> list[str]:
        """The extra services asked for in settings and in ``requested``, checked."""
        names = [n.strip() for n in self.settings.stack_extras.split(",") if n.strip()] + list(requested)
        if self.settings.monitoring:
            names.append("prometheus")
        names += _declared_servers(self.settings)
        unknown = sorted(set(names) - set(EXTRAS))
        if unknown:
            raise FeatureCtlError(
                f"unknown stack service(s) {', '.join(unknown)}",
                f"FEATURECTL_STACK_EXTRAS / --with take: {', '.join(EXTRAS)}",
            )
        return [n for n in EXTRAS if n in names]

    def service(self, name: str) -> Service:
        if name in STORES:
            return self.store_server(name)
        services: dict[str, Service] = {
            "postgres": self.postgres,
            "kafka": self.kafka,
            "connect": self.connect,
            "prometheus": self.prometheus,
            "keycloak": self.keycloak,
        }
        return services[name]

    def install(self, extras: tuple[str, ...] = ()) -> None:
        """Everything ``up`` needs on disk: Postgres binaries, the JVM jars, and for each store server asked for
        the Python packages its store declares (the demo's install has none) and its binaries."""
        self.postgres.ensure_installed()
        wanted = self.extras(extras)
        for name in STORE_EXTRAS:
            if name in wanted:
                kind = STORES[name]
                ensure_requirements(list(kind.packages), f"the {kind.label} online store")
                self.store_server(name).ensure_installed()
        if "prometheus" in wanted:
            self.prometheus.ensure_installed()
        if "keycloak" in wanted:
            self.keycloak.ensure_installed()
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
        for name in STORE_EXTRAS:
            if name in wanted:
                server = self.store_server(name)
                server.start()
                server.bootstrap()
        self.kafka.start()
        self.connect.start()
        if "prometheus" in wanted:
            self.prometheus.start()
        if "keycloak" in wanted:
            self.keycloak.start()
            self.keycloak.bootstrap()
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
            # Clusters may live outside the data directory (services.pg_location).
            for name in STORE_EXTRAS:
                self.store_server(name).wipe()
            self.prometheus.wipe()
            self.keycloak.wipe()
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
        for name in STORE_EXTRAS:
            server = self.store_server(name)
            if name in self.extras() or server.pid() is not None:
                checks.append((server.name, server.pid(), server.address, server.ready))
        prom = self.prometheus
        if "prometheus" in self.extras() or prom.pid() is not None:
            checks.append((prom.name, prom.pid(), prom.url, prom.ready))
        kc = self.keycloak
        if "keycloak" in self.extras() or kc.pid() is not None:
            checks.append((kc.name, kc.pid(), kc.url, kc.ready))
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
