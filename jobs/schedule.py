"""``--schedule`` mode: run a job now and then every interval, until SIGTERM/Ctrl-C.

Each run takes the job's lock, so a scheduled loop and a cron-started run never overlap. A failed
run is logged and the loop goes on (the next run retries); the exit code is 0 after a clean stop.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable

from core.errors import ConfigError, FeatureCtlError

logger = logging.getLogger(__name__)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """'90s', '15m', '1h', '1d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"schedule interval {text!r} is not understood", "write it as <number><s|m|h|d>, e.g. 15m"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_every(interval_s: float, job: Callable[[], None], name: str) -> None:
    """Run ``job`` at once and then every ``interval_s`` (from each run's start) until stopped."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        started = time.monotonic()
        try:
            job()
        except FeatureCtlError as exc:
            logger.error("%s: run failed: %s", name, exc)
        except Exception:
            logger.exception("%s: run failed", name)
        wait = max(0.0, interval_s - (time.monotonic() - started))
        logger.info("%s: next run in %.0fs", name, wait)
        stop.wait(wait)
    logger.info("%s: schedule stopped", name)
