"""Launching a JVM service from the cached jars: one place for heap, GC, logging and classpath."""

from __future__ import annotations

import logging
from pathlib import Path

from stack.jars import JvmJars

logger = logging.getLogger(__name__)

LOG4J2 = """\
# written by featurectl stack up
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.kafka-controller.name = org.apache.kafka.controller
logger.kafka-controller.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""


def java_command(jars: JvmJars, heap: str, main_class: str, config: Path, log4j_config: Path) -> list[str]:
    """The ``java`` argv the Kafka bin/ scripts would build, sized for a small shared machine."""
    log4j_config.write_text(LOG4J2)
    return [
        "java",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        # Debezium's replication session prints zoned text (a tstzrange) in the JVM's zone; the backfill and
        # verify read in UTC (connectors/encoding.py), so the worker must too, whatever the host's zone.
        "-Duser.timezone=UTC",
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        jars.classpath,
        main_class,
        str(config),
    ]


def render_properties(path: Path, props: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by featurectl stack up; edits are overwritten"]
    lines += [f"{k}={v}" for k, v in props.items()]
    path.write_text("\n".join(lines) + "\n")
