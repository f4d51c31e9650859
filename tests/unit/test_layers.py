"""The layering of the top-level packages (ARCHITECTURE.md, "The layers"): every import points down,
so there is no cycle, `streams` never imports `jobs`, and nothing outside the CLI imports it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lowest first; a package may import packages of lower layers only.
LAYERS: list[set[str]] = [
    {"core"},  # settings, errors, process helpers, metrics: imports nothing of ours
    {"validation", "embeddings", "connectors", "aggregations", "services"},
    {"stores"},  # one folder per online store, and the offline history
    {"streams"},  # the processor
    {"jobs"},  # snapshot, backfill, materialize, compact, verify, replay
    {"monitoring", "stack", "serving"},
    {"featurectl"},  # the CLI: parses, calls, prints
    {"onlinestore", "offlinestore"},  # old `type:` names, re-exported from stores/
]
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def imports(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (at any depth, including function-local imports)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def sources() -> list[Path]:
    return [p for pkg in LAYER_OF for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_every_package_of_ours_has_a_layer() -> None:
    ours = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert ours == set(LAYER_OF), f"give {ours ^ set(LAYER_OF)} a layer here and in ARCHITECTURE.md"


def test_imports_point_down_only() -> None:
    upward = []
    for path in sources():
        mine = path.relative_to(ROOT).parts[0]
        for name in imports(path):
            theirs = name.split(".")[0]
            if theirs in LAYER_OF and theirs != mine and LAYER_OF[theirs] >= LAYER_OF[mine]:
                upward.append(f"{path.relative_to(ROOT)} imports {name} ({theirs} is not below {mine})")
    assert not upward, "\n".join(upward)


def test_nothing_outside_the_cli_imports_it() -> None:
    found = [
        str(p.relative_to(ROOT))
        for p in sources()
        if p.relative_to(ROOT).parts[0] != "featurectl"
        and any(n == "featurectl.cli" or n.startswith("featurectl.cli.") for n in imports(p))
    ]
    assert not found, f"{found} import the CLI: move what they need below it"
