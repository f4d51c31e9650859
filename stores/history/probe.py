"""Can the processor write the offline history now? (``featurectl health``'s "offline history" line.)

For each CDC view's local Delta table: 4 KB written and removed in its log directory, under a name Delta never
reads (a full disk, a read-only or immutable directory fail it as they fail a commit); object-store tables are
left to the processor's own retries. Raises the OSError of the first table that fails.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from stores.history.reader import History

PROBE = 4096


def probe(store: Any) -> str:
    """How many local history tables took a write; the OSError of the first that did not."""
    checked = 0
    for view in store.list_feature_views():
        if not view.tags.get("cdc.table"):
            continue
        history = History(store, view)
        log = history.path / "_delta_log"
        if not history.delta or not log.is_dir():
            continue
        scratch = log / f".featurectl-health-{uuid.uuid4().hex}"
        try:
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"\0" * PROBE)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OSError(exc.errno, f"{view.name}: {exc.strerror}", str(log)) from None
        finally:
            scratch.unlink(missing_ok=True)
        checked += 1
    return f"{checked} history table(s) writable"
