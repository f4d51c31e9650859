"""The project's optional Python dependencies (pyproject.toml's extras), installed by the command that needs one.

`./dev.sh demo` installs featurectl without extras (the SQLite online store and the Delta history need none),
so the production stores, Milvus and Spark arrive when `featurectl stack install --with ...` / `--spark` asks
for them, into the environment featurectl runs in, with the versions featurectl declares.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement

from core.errors import FeatureCtlError

logger = logging.getLogger(__name__)

DISTRIBUTION = "featurectl"


def requirements(extra: str) -> list[Requirement]:
    """What ``extra`` adds to featurectl's own requirements (markers evaluated for this interpreter)."""
    try:
        declared = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        raise FeatureCtlError(
            "featurectl is not installed in this Python environment", "pip install -e . from the repository"
        ) from None
    out = []
    for text in declared:
        req = Requirement(text)
        if (
            req.marker is not None
            and req.marker.evaluate({"extra": extra})
            and not req.marker.evaluate({"extra": ""})
        ):
            out.append(req)
    if not out:
        raise FeatureCtlError(
            f"featurectl declares no extra {extra!r}", "see pyproject.toml's optional-dependencies"
        )
    return out


def missing(reqs: list[Requirement]) -> list[Requirement]:
    """The requirements no installed distribution satisfies."""
    out = []
    for req in reqs:
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            out.append(req)
            continue
        if not req.specifier.contains(version, prereleases=True):
            out.append(req)
    return out


def ensure_extra(extra: str) -> None:
    """Install what ``extra`` needs and is not installed yet (pip, into this interpreter's environment)."""
    todo = missing(requirements(extra))
    if not todo:
        return
    # Without their markers (`extra == "..."`), which pip would evaluate as false outside featurectl's install.
    specs = [
        f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}{r.specifier}" for r in todo
    ]
    logger.info("installing featurectl's %r extra: %s", extra, " ".join(specs))
    pip_install(specs, f"the {extra!r} extra", f"install it yourself: pip install -e '.[{extra}]'")


def ensure_requirements(texts: list[str], what: str) -> None:
    """Install those of the requirements ``texts`` (PEP 508) not satisfied yet: what a store folder declares
    (stores/<name>/__init__.py, ``KIND.packages``), into this interpreter's environment."""
    todo = missing([Requirement(t) for t in texts])
    if not todo:
        return
    specs = [str(r) for r in todo]
    logger.info("installing what %s needs: %s", what, " ".join(specs))
    pip_install(specs, what, "install them yourself: pip install " + " ".join(f"'{s}'" for s in specs))


def pip_install(args: list[str], what: str, otherwise: str) -> None:
    """``pip install -q ARGS`` with this interpreter; a FeatureCtlError naming ``what`` if it fails."""
    step = [sys.executable, "-m", "pip", "install", "-q", *args]
    done = subprocess.run(step, capture_output=True, text=True)
    if done.returncode != 0:
        raise FeatureCtlError(
            f"installing {what} failed: `{' '.join(step)}` exited {done.returncode}:\n"
            + (done.stdout + done.stderr)[-2000:],
            f"check that PyPI is reachable, or {otherwise}",
        )
