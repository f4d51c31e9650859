"""A Kafka Connect worker in distributed mode, with the Debezium PostgreSQL plugin on its plugin.path."""

from __future__ import annotations

import logging
import shutil

import requests

from core import procs
from core.settings import Settings
from stack import jvm
from stack.jars import JvmJars

logger = logging.getLogger(__name__)
POSTGRES_CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
# settings field -> environment variable of the worker that EnvVarConfigProvider reads it from
SECRET_ENV = {"debezium_password": "FEATURECTL_DEBEZIUM_PASSWORD"}


class ConnectWorker:
    """The local Connect worker. Constructing it touches nothing."""

    name = "connect"

    def __init__(self, settings: Settings, jars: JvmJars) -> None:
        self.settings = settings
        self.jars = jars
        self.home = settings.data_dir / "connect"
        self.config = self.home / "connect-distributed.properties"
        self.daemon = procs.Daemon(
            self.name, self.home / "connect.pid", settings.data_dir / "logs" / "connect.log", str(self.config)
        )

    def properties(self) -> dict[str, object]:
        s = self.settings
        return {
            "bootstrap.servers": s.bootstrap_servers,
            "group.id": "featurectl-connect",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "config.storage.topic": "_featurectl_connect_configs",
            "offset.storage.topic": "_featurectl_connect_offsets",
            "status.storage.topic": "_featurectl_connect_status",
            # The defaults (3) cannot be met by one broker.
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            # Flush source offsets often: after a crash, Debezium resumes from the last flushed LSN,
            # so this bounds how much is re-sent (at-least-once).
            "offset.flush.interval.ms": 1000,
            "listeners": f"http://127.0.0.1:{s.connect_port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": s.connect_port,
            "plugin.path": self.jars.plugins,
            # Debezium and Kafka's own plugins ship ServiceLoader manifests; skipping the reflective
            # scan saves seconds at every start.
            "plugin.discovery": "service_load",
            # Without this, tasks of a worker that died uncleanly stay unassigned for minutes.
            "scheduled.rebalance.max.delay.ms": 0,
            # Connector configs name secrets as ${env:VAR}, resolved here from the worker's environment,
            # so the config topic and the REST API hold the reference, never the password.
            "config.providers": "env",
            "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
        }

    def start(self) -> None:
        if self.daemon.pid() is not None:
            logger.info("connect: already running (pid %s)", self.daemon.pid())
            return
        procs.ensure_port_free(self.settings.connect_port, "kafka connect", "FEATURECTL_CONNECT_PORT")
        jvm.render_properties(self.config, self.properties())
        argv = jvm.java_command(
            self.jars,
            self.settings.connect_heap,
            "org.apache.kafka.connect.cli.ConnectDistributed",
            self.config,
            self.home / "log4j2.properties",
        )
        # The secrets connectors reference (connectors/definition.py SECRET_REFERENCES), in its environment only.
        env = {SECRET_ENV[field]: self.settings.require_secret(field) for field in SECRET_ENV}
        pid = procs.spawn(self.daemon, argv, env, nice=self.settings.connect_nice)
        procs.wait_for(
            self.ready,
            self.settings.startup_timeout_s,
            "Kafka Connect's REST API to list the Debezium PostgreSQL plugin",
            interval_s=0.5,
            check=lambda: procs.died_check(self.daemon, pid),
        )
        logger.info("connect: REST API ready on %s", self.settings.connect_rest_url)

    def ready(self) -> bool:
        """``GET /`` answers and the Debezium plugin is loaded."""
        base = self.settings.connect_rest_url
        try:
            if not requests.get(base + "/", timeout=2).ok:
                return False
            plugins = requests.get(base + "/connector-plugins", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return any(p.get("class") == POSTGRES_CONNECTOR_CLASS for p in plugins)

    def stop(self) -> bool:
        return procs.stop(self.daemon, grace_s=60)

    def wipe(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
