"""Logging of a featurectl process, configured once at its entry point (the CLI, or a spawned worker)."""

from __future__ import annotations

import logging
import sys
import warnings


def _quiet_libraries(record: logging.LogRecord) -> bool:
    noisy = record.name.startswith(("great_expectations", "feast", "py.warnings"))
    return record.levelno >= logging.ERROR or not noisy


def configure(verbose: bool) -> None:
    """INFO (DEBUG with ``verbose``) to stderr; libraries' chatter kept to their warnings."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries that narrate every registry refresh and validation run (and reset their own
    # loggers' levels on import): filter at the handler, keeping their warnings.
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_libraries)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
