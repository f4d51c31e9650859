"""What the feature server answered, spooled for the feature services that ask to be logged.

Feast's ``FeatureService(logging_config=LoggingConfig(destination, sample_rate))`` says a service's lookups are
logged to the offline store; Feast 0.67's Python server never does it (only its retired Go server did). Here
``featurectl serve`` does, in two halves so that a lookup pays almost nothing:

- **the server** (this module): a lookup the direct path answered for such a service (serving/lookup.py) is kept
  as it was on the wire: the request's time, the service and its columns' names (one bytes object per plan),
  the request body and the response body, framed and appended to an in-memory buffer (a lock and a list
  append). A thread of the server, at normal priority where the server runs real-time, writes the buffer to
  a **spool** file every ``interval_s`` (a temporary name, then renamed: readers see whole files only);
- **the shipper** (serving/log_shipper.py), a process of its own beside the servers: it decodes the spool
  files into Feast's log schema and appends them to each service's log table (stores/history/served.py),
  then deletes them.

Bounded: past ``max_buffer_bytes`` in memory, or ``max_spool_bytes`` in the spool (the shipper is behind or
stopped), a lookup's log is dropped, counted (``featurectl_served_log_dropped_total``) and warned about; the
lookup itself is answered as always. A clean stop (SIGTERM: the server's lifespan shutdown) writes what the
buffer holds; the shipper ships everything in the spool before it exits, and a spool left by a crash is
shipped by the next shipper started on it. A server killed with SIGKILL loses at most its last
``interval_s`` of logs.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Each record: request time (ns since the epoch: the instant the lookup was answered as of), then the lengths of
# the header, the request and the response.
FRAME = struct.Struct("<qIII")
SUFFIX = ".log"
SPOOL_ENV = "FEAST_SERVE_LOG_SPOOL"  # set by serving/feature_server.py for its server processes
MAX_BUFFER_BYTES = 64 * 1024 * 1024
MAX_SPOOL_BYTES = 1024 * 1024 * 1024


def _dropped_counter() -> object | None:
    try:
        from prometheus_client import Counter

        return Counter(
            "featurectl_served_log_dropped",
            "Lookups of logged feature services whose log was dropped (buffer or spool full).",
            ["reason"],
        )
    except Exception:  # registered already (a second log in one process, tests), or no client
        return None


_DROPPED = _dropped_counter()


class ServedLog:
    """The server half (module docstring): ``record`` on the lookup path, a thread writing spool files."""

    def __init__(
        self,
        spool: Path,
        interval_s: float = 1.0,
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
        max_spool_bytes: int = MAX_SPOOL_BYTES,
    ) -> None:
        self.spool = spool
        self.interval_s = interval_s
        self.max_buffer_bytes = max_buffer_bytes
        self.max_spool_bytes = max_spool_bytes
        self.dropped = 0
        self._chunks: list[bytes] = []
        self._bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # File names: this process and its start, then a sequence number (the shipper's exactly-once mark).
        self._name = f"{os.uname().nodename}-{os.getpid()}-{time.time_ns()}"
        self._seq = 0
        self._warned = 0.0
        spool.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
        self._thread.start()

    def record(self, header: bytes, rate: float, request: bytes, response: bytes, at_ns: int) -> None:
        """Keep one answered lookup (``header``: the plan's service and column names), sampled at ``rate``;
        ``at_ns``: the instant it was answered as of (the log's request time)."""
        if rate < 1.0 and random.random() >= rate:
            return
        size = len(header) + len(request) + len(response) + FRAME.size
        with self._lock:
            if self._bytes + size > self.max_buffer_bytes:
                self._drop("buffer", 1)
                return
            self._chunks += (
                FRAME.pack(at_ns, len(header), len(request), len(response)),
                header,
                request,
                response,
            )
            self._bytes += size

    def _drop(self, reason: str, n: int) -> None:
        self.dropped += n
        if _DROPPED is not None:
            _DROPPED.labels(reason=reason).inc(n)  # type: ignore[attr-defined]
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            logger.warning(
                "served log: %d logged lookup(s) dropped so far (%s full); is the log shipper running on %s?",
                self.dropped,
                reason,
                self.spool,
            )

    def _run(self) -> None:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            # The server runs real-time; this thread (Linux: per-thread policy) must never take a core from it.
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:
                logger.exception("served log: writing the spool %s failed; retrying", self.spool)

    def flush(self) -> None:
        """Write what the buffer holds to one spool file (nothing when empty or the spool is full)."""
        with self._lock:
            chunks, self._chunks = self._chunks, []
            self._bytes = 0
        if not chunks:
            return
        if _spool_bytes(self.spool) > self.max_spool_bytes:
            self._drop("spool", len(chunks) // 4)
            return
        self._seq += 1
        name = f"{self._name}-{self._seq:012d}{SUFFIX}"
        tmp = self.spool / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            # Chunk by chunk, not joined first: a join copies the whole second's log (megabytes) holding the GIL,
            # which the real-time lookup thread then waits for behind this normal-priority one; each write lets it go.
            fh.writelines(chunks)
        os.replace(tmp, self.spool / name)

    def close(self) -> None:
        """Stop the thread and write what is left (a clean stop loses nothing)."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()


def _spool_bytes(spool: Path) -> int:
    try:
        return sum(e.stat().st_size for e in os.scandir(spool) if e.name.endswith(SUFFIX))
    except OSError:
        return 0


def spool_files(spool: Path) -> list[Path]:
    """The whole spool files, oldest first per writer (names end in their sequence number)."""
    if not spool.is_dir():
        return []
    return sorted(p for p in spool.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))


def read_records(path: Path) -> list[tuple[int, bytes, bytes, bytes]]:
    """A spool file's records: (request time in ns, header, request, response). A file cut short (a host
    crash while it was written) yields its whole records and a warning."""
    data = path.read_bytes()
    out = []
    at = 0
    while at + FRAME.size <= len(data):
        t_ns, h, q, r = FRAME.unpack_from(data, at)
        at += FRAME.size
        if at + h + q + r > len(data):
            break
        header = data[at : at + h]
        request = data[at + h : at + h + q]
        response = data[at + h + q : at + h + q + r]
        at += h + q + r
        out.append((t_ns, header, request, response))
    if at != len(data):
        logger.warning("served log: %s ends in a partial record (%d bytes ignored)", path, len(data) - at)
    return out
