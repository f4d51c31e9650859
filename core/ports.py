"""A free TCP port for a throwaway server (a test's, a bench's), which no other process is handed meanwhile.

The usual trick, bind port 0 and close, returns a port of Linux's ephemeral range (32768-60999): until the
server binds it, any process's outgoing connection or bind(0) may take it (CI saw a Spark JVM of the other
pytest worker hold the port picked for `featurectl serve`). The ports here come from below that range and
below every port of this project's stacks (25432 and up), and each is reserved by a lock file held until the
picking process exits, so two processes picking at once never get the same one.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

LOW, HIGH = 20000, 25000
_LOCKS = Path(tempfile.gettempdir()) / "featurectl-ports"
_held: dict[int, int] = {}  # port -> the descriptor of its lock, kept open for the process's life


def _bindable(port: int) -> bool:
    """Whether nothing holds ``port`` on any address (a listener, a connection, a TIME_WAIT)."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port in [LOW, HIGH) that nothing holds now and no other caller of this function gets until this
    process exits; raises OSError if every one is taken."""
    _LOCKS.mkdir(exist_ok=True)
    start = random.randrange(LOW, HIGH)  # processes picking at once start apart
    for i in range(HIGH - LOW):
        port = LOW + (start - LOW + i) % (HIGH - LOW)
        if port in _held:
            continue
        fd = os.open(_LOCKS / str(port), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if _bindable(port):
            _held[port] = fd
            return port
        os.close(fd)  # releases the lock: the port is someone else's, not reserved
    raise OSError(f"no free port in {LOW}-{HIGH - 1}")
