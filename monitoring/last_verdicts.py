"""The latest verdict per checked thing (a view's drift, a feature service's consistency), kept as one JSON file
that `featurectl health` reads; each write replaces the file atomically and keeps the other entries."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def save(path: Path, updates: dict[str, dict[str, Any]]) -> None:
    """Set ``updates``' entries in the file at ``path`` (others stay), replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = load(path)
    kept.update(updates)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(kept, indent=1))
    tmp.replace(path)


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The file's entries, none when it is missing or unreadable."""
    try:
        loaded: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return loaded
    except (FileNotFoundError, ValueError):
        return {}
