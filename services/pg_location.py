"""Where the local Postgres cluster lives and which OS user runs it.

Postgres refuses to run as root, so as root the server runs as the ``postgres`` OS user (created by
the Debian package). That user must be able to traverse every parent of the cluster's directory,
and a clone under a 0700 directory (root's home, ``mktemp -d``) does not allow it. The rule, one for
every root run, so it does not depend on permissions that may change later:

- as root, a new cluster lives in ``<pg_clusters_dir>/<random id>`` (default
  ``/var/lib/featurectl/postgres``), owned by ``postgres`` with mode 0700, and
  ``<data_dir>/postgres`` is a symlink to it: every command finds the cluster through the data
  directory, so a second ``stack up``, ``status`` and ``down --wipe`` reach it, and two data
  directories (two clones) never share one. The users' own directories are never chmod'ed.
- as any other user, the server runs as that user, in ``<data_dir>/postgres`` itself.
- a cluster made in place by an earlier version (a real directory holding ``data/PG_VERSION``)
  stays where it is.

``home`` holds ``data/`` (the cluster), ``run/`` (the Unix socket) and ``postgres.log``; ``owner``
in it records which data directory it belongs to, so a copied data directory (whose symlink
points at the original's cluster) is refused instead of silently sharing the cluster.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT_OS_USER = "postgres"
OWNER_FILE = "owner"


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """The decision: where the cluster's home is and who runs the server."""

    home: Path
    """Directory with ``data/``, ``run/`` and ``postgres.log``; absolute, symlinks resolved."""
    os_user: str | None
    """OS user the server commands run as; None means the invoking user."""
    link: Path | None
    """``<data_dir>/postgres`` when it is (or must become) a symlink to ``home``."""

    @property
    def relocated(self) -> bool:
        return self.link is not None


def plan_cluster(
    data_dir: Path, clusters_dir: Path, euid: int, new_id: str | None = None, entry_name: str = "postgres"
) -> ClusterPlan:
    """Decide where the cluster of ``data_dir`` lives (reads the file system, changes nothing).

    ``new_id`` names a cluster to be created (random when not given); it is used only when the
    data directory has none yet. ``entry_name``: the cluster's entry in the data directory (one per
    Postgres service of the stack).
    """
    entry = data_dir.absolute() / entry_name
    os_user = ROOT_OS_USER if euid == 0 else None
    if entry.is_symlink():
        return ClusterPlan(entry.resolve(), os_user, entry)
    if entry.is_dir() and (euid != 0 or (entry / "data" / "PG_VERSION").exists()):
        return ClusterPlan(entry.resolve(), os_user, None)
    if euid != 0:
        return ClusterPlan(entry, None, None)
    cluster_id = new_id or secrets.token_hex(6)
    return ClusterPlan(clusters_dir.absolute() / cluster_id, os_user, entry)


def first_untraversable(path: Path, can_enter: Callable[[Path], bool]) -> Path | None:
    """The first of ``path``'s existing ancestors (from ``/`` down) that ``can_enter(dir)`` rejects."""
    for parent in reversed([path, *path.parents]):
        if parent.exists() and not can_enter(parent):
            return parent
    return None
