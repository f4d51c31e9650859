"""The chain's records: what a run of ``bench.chain`` printed, kept under docs/runs/ with the commit, date and
machine that produced it, and README's Performance table written from one of them.

    .venv/bin/python -m bench.chain --record docs/runs/chain-<date>-<commit>.txt   # (full mode records by default)
    .venv/bin/python -m bench.record docs/runs/chain-<date>-<commit>.txt           # README's table from it

README's table sits between two markers naming its record; tests/unit/test_docs.py checks that it is the
record's table, so each figure there traces to a run's output.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.settings import PROJECT_ROOT

RUNS_DIR = PROJECT_ROOT / "docs" / "runs"
README = PROJECT_ROOT / "README.md"
TABLE_START = "===== the chain"
"""The chain prints its table after this line; everything before is the benches' own output."""
BEGIN = re.compile(
    r"^<!-- the chain's table, from (?P<record>docs/runs/\S+) \(python -m bench\.record\) -->$", re.M
)
END = "<!-- end of the chain's table -->"


def commit() -> str:
    """The checkout's commit, and whether it had uncommitted changes (then the figures are not that commit's)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{sha} (with uncommitted changes)" if dirty else sha


def machine() -> str:
    """Cores, memory, CPU model, kernel and Python: what the figures depend on."""
    model = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found[1].strip() if found else model
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def header(command: list[str]) -> str:
    return (
        "# bench.chain record\n"
        f"commit: {commit()}\n"
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"machine: {machine()}\n"
        f"command: {' '.join(command)}\n"
    )


def default_path() -> Path:
    sha = commit().split()[0]
    return RUNS_DIR / f"chain-{datetime.now(UTC):%Y-%m-%d}-{sha}.txt"


def chain_table(record: Path) -> str:
    """The chain's table in ``record``: the lines after its ``command:`` line under ``===== the chain``."""
    text = record.read_text()
    if TABLE_START not in text:
        raise ValueError(f"{record} holds no chain table (no {TABLE_START!r} line)")
    after = text[text.index(TABLE_START) :].split("\n")
    body = after[2:] if len(after) > 1 and after[1].startswith("command:") else after[1:]
    return "\n".join(body).strip("\n")


def readme_block(record: Path) -> str:
    """README's Performance table written from ``record``: the markdown table, then the rest as text."""
    table = chain_table(record)
    rows = [line for line in table.split("\n") if line.startswith("|")]
    rest = "\n".join(line for line in table.split("\n")[len(rows) :]).strip("\n")
    path = record.resolve()
    relative = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    return (
        f"<!-- the chain's table, from {relative} (python -m bench.record) -->\n"
        + "\n".join(rows)
        + (f"\n\n```text\n{rest}\n```" if rest else "")
        + f"\n{END}"
    )


def readme_record(readme: str) -> tuple[Path, str]:
    """The record README's table names, and the block as README has it now."""
    begin = BEGIN.search(readme)
    if begin is None or END not in readme[begin.end() :]:
        raise ValueError(f"README has no chain table between {BEGIN.pattern!r} and {END!r}")
    end = readme.index(END, begin.end()) + len(END)
    return PROJECT_ROOT / begin["record"], readme[begin.start() : end]


def write_readme(record: Path) -> None:
    text = README.read_text()
    _, block = readme_record(text)
    README.write_text(text.replace(block, readme_block(record)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.record docs/runs/chain-<date>-<commit>.txt")
    write_readme(Path(sys.argv[1]))
    print(f"README's Performance table written from {sys.argv[1]}")
