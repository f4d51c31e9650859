"""The JVM half of the stack: Kafka, Connect and the Debezium plugin from Maven Central, cached.

Jars land in ``<cache_dir>/jvm/kafka-<v>_debezium-<v>/{libs,plugins}`` outside the repository, so
every checkout and every run after the first reuses them.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from core.errors import FeatureCtlError
from core.settings import Settings
from services import system

logger = logging.getLogger(__name__)
POM = Path(__file__).with_name("pom.xml")


@dataclass(frozen=True, slots=True)
class JvmJars:
    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def plugins(self) -> Path:
        return self.home / "plugins"

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    @property
    def complete(self) -> bool:
        return (self.home / ".complete").exists() and (self.plugins / "debezium-connector-postgres").is_dir()


def jars_for(settings: Settings) -> JvmJars:
    return JvmJars(
        settings.cache_dir / "jvm" / f"kafka-{settings.kafka_version}_debezium-{settings.debezium_version}"
    )


def ensure_jars(settings: Settings) -> JvmJars:
    """Download the jars with Maven unless this version pair is cached already (idempotent)."""
    jars = jars_for(settings)
    if jars.complete:
        return jars
    system.ensure_command("java", "openjdk-17-jre-headless")
    system.ensure_command("mvn", "maven")
    staging = jars.home.with_name(jars.home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "downloading Kafka %s, Connect and Debezium %s from Maven Central into %s",
        settings.kafka_version,
        settings.debezium_version,
        jars.home,
    )
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(POM),
        "package",
        f"-Dstack.home={staging}",
        f"-Dkafka.version={settings.kafka_version}",
        f"-Ddebezium.version={settings.debezium_version}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise FeatureCtlError(
            "Maven could not fetch the Kafka/Connect/Debezium jars:\n"
            + (result.stdout + result.stderr)[-3000:],
            "check that Maven Central is reachable and that FEATURECTL_KAFKA_VERSION and "
            "FEATURECTL_DEBEZIUM_VERSION name released versions",
        )
    if not any(staging.glob("plugins/debezium-connector-postgres/debezium-connector-postgres-*.jar")):
        raise FeatureCtlError(
            f"Maven ran but the Debezium plugin is missing from {staging / 'plugins'}",
            f"remove {staging} and retry",
        )
    shutil.rmtree(jars.home, ignore_errors=True)
    staging.rename(jars.home)
    (jars.home / ".complete").write_text(f"{settings.kafka_version} {settings.debezium_version}\n")
    logger.info("jars ready: %d in libs/, Debezium plugin in plugins/", len(list(jars.libs.glob("*.jar"))))
    return jars
