"""How fast the job commands reach their first action: the median of N runs of each, as whole processes.

    .venv/bin/python -m bench.startup_bench [--runs 5] [--root CHECKOUT]

A job's first action is taking its lock (backfill, materialize, compact, snapshot): the bench holds each lock,
so the time to the command's exit (75, "already running") is the time it took to get there. `verify` takes no
lock: its first action is reading its settings (the Postgres password), measured as the time to its exit when
the password is missing. Also `--help` of each, and the anchors: a bare interpreter, `import feast` and
`import great_expectations` (what a command pays when it imports them before acting). ``--root`` runs another
checkout's code (e.g. a worktree of the commit before) with this environment, for a before/after in one run.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from connectors.definition import load_definition
from core.settings import PROJECT_ROOT

CLI = "from featurectl.cli import main; main()"


def timed(argv: list[str], env: dict[str, str], cwd: Path, runs: int) -> tuple[float, int]:
    """Median wall time of ``argv`` over ``runs`` runs, and the exit code of the last."""
    times, code = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - started)
        code = done.returncode
    return statistics.median(times), code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the checkout whose featurectl to run")
    args = ap.parse_args()
    root = args.root.resolve()
    data = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "FEATURECTL_DATA_DIR": str(data),
        "FEAST_USAGE": "False",
    }
    # verify's first check refuses a missing password (no secrets file in `data` either).
    env.pop("FEATURECTL_PG_APP_PASSWORD", None)
    locks = data / "locks"
    locks.mkdir(parents=True)
    snapshot_lock = f"snapshot-{load_definition().name}"
    held = []
    for name in ("backfill-customer_features", "materialize", "compact", snapshot_lock):
        fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(fd)
    py = [sys.executable]
    cases = [
        ("python -c pass (anchor)", [*py, "-c", "pass"], None),
        ("python -c 'import feast' (anchor)", [*py, "-c", "import feast"], None),
        ("python -c 'import great_expectations' (anchor)", [*py, "-c", "import great_expectations"], None),
        ("featurectl --help", [*py, "-c", CLI, "--help"], 0),
    ]
    for command, args_ in (
        ("backfill", ["backfill", "customer_features"]),
        ("materialize", ["materialize"]),
        ("compact", ["compact"]),
        ("snapshot", ["snapshot", "public.customers"]),
        ("verify", ["verify"]),
    ):
        cases.append((f"featurectl {command} --help", [*py, "-c", CLI, args_[0], "--help"], 0))
        expected = 1 if command == "verify" else 75
        what = "its settings refused" if command == "verify" else "its lock found held"
        cases.append((f"featurectl {' '.join(args_)}: {what}", [*py, "-c", CLI, *args_], expected))
    print(f"code: {root}; median of {args.runs} runs each, whole processes")
    print("| command | median s | exit |\n|---|---:|---:|")
    wrong = []
    for label, argv, expected in cases:
        median, code = timed(argv, env, root, args.runs)
        print(f"| {label} | {median:.2f} | {code} |", flush=True)
        if expected is not None and code != expected:
            wrong.append(f"{label}: exit {code}, expected {expected}")
    print(f"command: {' '.join([sys.executable, '-m', 'bench.startup_bench', *sys.argv[1:]])}")
    for fd in held:
        os.close(fd)
    if wrong:
        sys.exit("\n".join(wrong))


if __name__ == "__main__":
    main()
