"""The project's image (Dockerfile) built and run with podman, on hosts without a Docker engine (ours, CI).

No image registry is reachable from these hosts, so the Dockerfile's default base (the official Python image)
cannot be pulled: the base is a Debian root made by ``debootstrap`` from Debian's packages (the same release
and Python as the official ``python:3.11-slim-bookworm``), trimmed, and imported into podman under a tag
named by its recipe, so a second build reuses it. podman runs containers with ``runc`` and no default
ulimits (crun and podman's default ulimits fail on this VM's cgroups), through a containers.conf of our own
(``CONTAINERS_CONF``), leaving the host's configuration alone. Needs root (podman's rootful store).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import FeatureCtlError
from core.settings import PROJECT_ROOT, Settings
from services.system import apt_install

logger = logging.getLogger(__name__)

IMAGE = "localhost/featurectl:dev"
"""What `featurectl image build` tags by default (the tests run this one)."""
RUN_FLAGS = ("--read-only", "--tmpfs", "/var/lib/featurectl:rw,U")
"""How a role's container runs, as the Kubernetes manifests run it: a read-only root filesystem, the user's home
a scratch tmpfs it owns (readOnlyRootFilesystem; an emptyDir with fsGroup). docs/deploy.md shows them; the image's
integration test runs with them."""
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "tini")
"""The base's packages on top of Debian's minimal system: the interpreter, venv (the Dockerfile makes one),
the CA list and tini (PID 1)."""
TRIMMED = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
"""What the base drops after debootstrap, as Debian's own slim images do (~150 MB: package archives, lists,
documentation, translations); apt-get update brings the lists back if a derived image installs more."""
CONTAINERS_CONF = """\
# Written by featurectl (stack/image.py): podman on this host runs containers with runc (crun fails on its
# cgroups) and sets no ulimits of its own (its defaults are refused here).
[containers]
default_ulimits = []
[engine]
runtime = "runc"
"""


@dataclass(frozen=True)
class Podman:
    """podman with the project's containers.conf."""

    conf: Path

    @classmethod
    def ensure(cls, settings: Settings) -> Podman:
        """podman, runc and debootstrap installed (Debian packages; root), and the containers.conf written."""
        missing = [p for p in ("podman", "runc", "debootstrap") if shutil.which(p) is None]
        if missing:
            apt_install(*missing)
        conf = settings.cache_dir / "podman" / "containers.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
            conf.write_text(CONTAINERS_CONF)
        return cls(conf)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def command(self, *args: str) -> list[str]:
        """The command line of ``podman ARGS`` (run it with ``env``)."""
        return ["podman", *args]

    def run(self, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*args), env=self.env, capture_output=capture, text=True)
        if check and done.returncode != 0:
            raise FeatureCtlError(
                f"podman {' '.join(args[:3])} failed (exit {done.returncode}): {(done.stderr or '')[-2000:]}",
                "see podman's message above",
            )
        return done

    def image_exists(self, tag: str) -> bool:
        return self.run("image", "exists", tag, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        """The image's size in bytes, as `podman images` counts it (all layers, uncompressed)."""
        out = self.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
        return int(out)


def base_tag() -> str:
    """The Debian base's tag, named by its recipe: another recipe is another image."""
    recipe = json.dumps([DEBIAN_SUITE, DEBIAN_MIRROR, BASE_PACKAGES, TRIMMED])
    return f"localhost/featurectl-base:{DEBIAN_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def ensure_debian_base(podman: Podman, settings: Settings) -> str:
    """The Debian base image (made once: debootstrap, trim, podman import), its tag."""
    tag = base_tag()
    if podman.image_exists(tag):
        return tag
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=settings.cache_dir))
    root = work / "root"
    try:
        logger.info("making the Debian base %s with debootstrap from %s (about a minute)", tag, DEBIAN_MIRROR)
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(root),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise FeatureCtlError(
                f"debootstrap failed (exit {done.returncode}): {done.stdout[-1500:]}{done.stderr[-500:]}",
                f"check that {DEBIAN_MIRROR} is reachable (the host's apt-get update uses it)",
            )
        for rel in TRIMMED:
            target = root / rel
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            podman.command("import", "-", tag), stdin=tar.stdout, env=podman.env, capture_output=True, text=True
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise FeatureCtlError(f"podman import of {root} failed: {imported.stderr[-1500:]}", "see above")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("Debian base %s: %.0f MB", tag, podman.image_size(tag) / 1e6)
    return tag


def ca_bundle() -> Path | None:
    """The CA bundle this host's pip trusts (PIP_CERT, else the system's): the build's pip trusts the same, so a
    TLS-inspecting proxy between the host and PyPI works inside the build too."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_command(podman: Podman, tag: str, base: str | None, context: Path = PROJECT_ROOT) -> list[str]:
    """The ``podman build`` that makes ``tag`` from the Dockerfile (``base`` None: the Dockerfile's own)."""
    args = ["build", "--isolation", "chroot", "--network", "host", "-t", tag]
    bundle = ca_bundle()
    if bundle is not None:
        args += ["--secret", f"id=ca_bundle,src={bundle}"]
    if base is not None:
        args += ["--build-arg", f"BASE={base}"]
    return podman.command(*args, str(context))


def build(settings: Settings, tag: str = IMAGE, base: str | None = "debian", context: Path = PROJECT_ROOT) -> int:
    """Build the image ``tag``; ``base`` "debian" makes the Debian base first (hosts without a registry), any
    other value is an image to build on, None the Dockerfile's default. Returns its size in bytes."""
    podman = Podman.ensure(settings)
    if base == "debian":
        base = ensure_debian_base(podman, settings)
    command = build_command(podman, tag, base, context)
    logger.info("building %s: %s", tag, " ".join(command))
    # podman prints each step as it goes: the progress of a build that takes minutes the first time.
    done = subprocess.run(command, env=podman.env)
    if done.returncode != 0:
        raise FeatureCtlError(
            f"podman build of {tag} failed (exit {done.returncode})", "its output above names the failing step"
        )
    size = podman.image_size(tag)
    logger.info("built %s: %.2f GB", tag, size / 1e9)
    return size
