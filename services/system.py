"""Operating-system packages the stack needs, installed with apt-get when missing (idempotent)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from core.errors import FeatureCtlError

logger = logging.getLogger(__name__)
_apt_updated = False


def apt_install(*packages: str) -> None:
    """Install Debian packages; needs root. Runs ``apt-get update`` once per process first."""
    global _apt_updated
    if os.geteuid() != 0:
        raise FeatureCtlError(
            f"missing system packages: {' '.join(packages)}",
            f"install them: sudo apt-get update && sudo apt-get install -y {' '.join(packages)}",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        logger.info("apt-get update")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        _apt_updated = True
    logger.info("apt-get install %s", " ".join(packages))
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise FeatureCtlError(
            f"apt-get install {' '.join(packages)} failed:\n{result.stderr[-2000:]}",
            "check that the Debian package mirrors are reachable",
        )


def ensure_command(command: str, package: str) -> None:
    if shutil.which(command) is None:
        apt_install(package)
