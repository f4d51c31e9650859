"""Delta Lake's Spark jars, for the Spark offline store (stores/history/spark_store.py).

pyspark (the ``spark`` extra) bundles Spark's own jars but not Delta Lake's. Spark's usual way,
``spark.jars.packages`` (what ``delta.configure_spark_with_delta_pip`` sets), resolves them with Ivy when
a session starts: a download at run time, from hosts a production network may not reach. Here Maven
fetches them once, at install, into ``settings.delta_jars_dir``; the store adds them to ``spark.jars``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from core.errors import FeatureCtlError
from core.settings import Settings
from services import system
from stack.extras import ensure_extra

logger = logging.getLogger(__name__)

# Delta's Spark jar is built per Spark minor and Scala version: this one matches the `spark` extra's pyspark 4.2.
ARTIFACTS = ("io.delta:delta-spark_4.2_2.13", "io.delta:delta-storage")


def ensure_delta_jars(settings: Settings) -> list[Path]:
    """Download Delta Lake's Spark jars with Maven unless this version is cached already (idempotent)."""
    ensure_extra("spark")  # pyspark itself
    home = settings.delta_jars_dir
    done = home / ".complete"
    if done.exists():
        return sorted(home.glob("*.jar"))
    system.ensure_command("java", "openjdk-17-jre-headless")
    system.ensure_command("mvn", "maven")
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "downloading Delta Lake %s's Spark jars from Maven Central into %s",
        settings.delta_spark_version,
        home,
    )
    for artifact in ARTIFACTS:
        coords = f"{artifact}:{settings.delta_spark_version}"
        result = subprocess.run(
            ["mvn", "-B", "-q", "dependency:copy", f"-Dartifact={coords}", f"-DoutputDirectory={staging}"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise FeatureCtlError(
                f"Maven could not fetch {coords}:\n" + (result.stdout + result.stderr)[-2000:],
                "check that Maven Central is reachable and that FEATURECTL_DELTA_SPARK_VERSION names a "
                "released Delta Lake version",
            )
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    done.write_text(f"{settings.delta_spark_version}\n")
    jars = sorted(home.glob("*.jar"))
    logger.info("Delta Lake jars ready: %s", ", ".join(j.name for j in jars))
    return jars
