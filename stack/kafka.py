"""A single-node Apache Kafka 4.x in KRaft mode (broker and controller in one process)."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from core import procs
from core.errors import FeatureCtlError
from core.settings import Settings
from stack import jvm
from stack.jars import JvmJars

logger = logging.getLogger(__name__)
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_USER = "featurectl"  # the local broker's SASL user


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64 without padding, as ``kafka-storage random-uuid``.

    Like Kafka's ``Uuid.randomUuid``, never one starting with ``-``: the storage tool's argument parser
    takes such a value for an option (1 in 64 random ids; seen as "expected one argument").
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """The local broker. Constructing it touches nothing; ``start`` formats storage once, then runs."""

    name = "kafka"

    def __init__(self, settings: Settings, jars: JvmJars) -> None:
        self.settings = settings
        self.jars = jars
        self.home = settings.data_dir / "kafka"
        self.config = self.home / "server.properties"
        self.log_dirs = self.home / "data"
        self.daemon = procs.Daemon(
            self.name, self.home / "kafka.pid", settings.data_dir / "logs" / "kafka.log", str(self.config)
        )

    def properties(self) -> dict[str, object]:
        s = self.settings
        return {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port},"
            f"SASL://127.0.0.1:{s.kafka_sasl_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port},SASL://127.0.0.1:{s.kafka_sasl_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT",
            # The SASL listener authenticates with SCRAM (what managed Kafkas offer besides PLAIN over TLS);
            # its user is created at start (ensure_sasl_user), stored hashed in the cluster metadata.
            "sasl.enabled.mechanisms": ",".join(SCRAM),
            **{
                f"listener.name.sasl.{m.lower()}.sasl.jaas.config": "org.apache.kafka.common.security.scram."
                "ScramLoginModule required;"
                for m in SCRAM
            },
            "log.dirs": self.log_dirs,
            "num.partitions": 4,
            # One broker: every internal topic must live with a single replica.
            "default.replication.factor": 1,
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "log.retention.hours": 168,
            "log.segment.bytes": 268435456,
        }

    def _format_storage(self) -> None:
        if (self.log_dirs / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        logger.info("kafka: formatting KRaft storage %s (cluster id %s)", self.log_dirs, cluster_id)
        result = subprocess.run(
            [
                "java",
                "-cp",
                self.jars.classpath,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(self.config),
                "--standalone",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise FeatureCtlError(
                f"kafka storage format failed:\n{result.stdout}{result.stderr}",
                f"remove {self.log_dirs} and retry, or run `featurectl stack down --wipe`",
            )

    def start(self) -> None:
        if self.daemon.pid() is not None:
            logger.info("kafka: already running (pid %s)", self.daemon.pid())
            self.ensure_sasl_user()
            return
        for port, setting in (
            (self.settings.kafka_port, "FEATURECTL_KAFKA_PORT"),
            (self.settings.kafka_controller_port, "FEATURECTL_KAFKA_CONTROLLER_PORT"),
            (self.settings.kafka_sasl_port, "FEATURECTL_KAFKA_SASL_PORT"),
        ):
            procs.ensure_port_free(port, "kafka", setting)
        jvm.render_properties(self.config, self.properties())
        self._format_storage()
        argv = jvm.java_command(
            self.jars, self.settings.kafka_heap, "kafka.Kafka", self.config, self.home / "log4j2.properties"
        )
        pid = procs.spawn(self.daemon, argv)
        procs.wait_for(
            self.ready,
            self.settings.startup_timeout_s,
            "the Kafka broker to answer metadata requests",
            check=lambda: procs.died_check(self.daemon, pid),
        )
        self.ensure_sasl_user()
        logger.info(
            "kafka: broker ready on 127.0.0.1:%d (SASL/SCRAM user %s on 127.0.0.1:%d)",
            self.settings.kafka_port,
            SASL_USER,
            self.settings.kafka_sasl_port,
        )

    def ensure_sasl_user(self) -> None:
        """Create or update the SCRAM credentials of SASL_USER (idempotent; the password from the secrets file)."""
        password = self.settings.require_secret("kafka_sasl_password")
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.settings.kafka_port}"})
        for mechanism in SCRAM:  # one request per mechanism: Kafka refuses two changes of a user in one
            upsert = UserScramCredentialUpsertion(
                SASL_USER,
                ScramCredentialInfo(getattr(ScramMechanism, mechanism.replace("-", "_")), 8192),
                password.encode(),
            )
            for future in admin.alter_user_scram_credentials([upsert], request_timeout=30).values():
                future.result(timeout=30)

    def ready(self) -> bool:
        """Broker metadata answers and lists this broker."""
        try:
            admin = AdminClient(
                {
                    "bootstrap.servers": self.settings.bootstrap_servers,
                    "socket.timeout.ms": 2000,
                    # "connection refused" is the expected answer while the broker starts: keep it quiet.
                    "log_level": 0,
                }
            )
            meta = admin.list_topics(timeout=2)
            return len(meta.brokers) > 0
        except Exception:  # confluent-kafka raises KafkaException or cimpl errors while it starts
            return False

    def stop(self) -> bool:
        return procs.stop(self.daemon, grace_s=60)

    def wipe(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
