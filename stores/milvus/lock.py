"""This host's lock on writing one Milvus online store: Milvus has no transactions, so the processor and
the jobs on a host take turns (stores/milvus/sink.py says what that covers and what it cannot)."""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from feast import RepoConfig


def address(config: RepoConfig) -> str:
    online = config.online_store
    return str(online.uri or f"{online.host}:{online.port}")


@contextmanager
def host_lock(config: RepoConfig) -> Iterator[None]:
    """This host's exclusive lock on writing the Milvus online store of ``config`` (its address, database
    and project): held by one writer at a time, in any process; released when the process dies."""
    ident = f"{address(config)}|{config.online_store.db_name or ''}|{config.project}"
    directory = Path(tempfile.gettempdir()) / "featurectl-locks"
    if not directory.exists():
        directory.mkdir(exist_ok=True)
        directory.chmod(0o1777)  # every user's writers lock here, as in /tmp
    path = directory / f"milvus-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
