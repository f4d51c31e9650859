"""The check stage: validate a view's rows, dead-letter the invalid ones with their reasons, keep the
rest. One stage for every writer that validates: the stream (streams/pipeline.py) and the backfill
(jobs/pg_backfill.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from feast.types import FeastType

from streams.dlq import DeadLetterSink
from streams.events import KafkaMessage
from validation.validator import BatchValidator, describe


def check(
    validator: BatchValidator,
    dead_letters: DeadLetterSink,
    view: str,
    rows: list[dict[str, Any]],
    features: Sequence[tuple[str, FeastType]],
    message_of: Callable[[int], KafkaMessage],
    attempt: int = 1,
    pii_policy: Mapping[str, str] | None = None,
) -> list[int]:
    """Validate ``rows`` against ``view``'s suite (and each feature's declared type); buffer a dead letter
    for each invalid row (``message_of(i)``: what it came from; the expectations it failed); return the
    indices of the valid rows, in order. A suite that cannot run raises ConfigError (nothing buffered)."""
    verdict = validator.validate(view, rows, features)
    for i, failures in verdict.invalid.items():
        dead_letters.add(
            message_of(i),
            describe(failures),
            [f.as_dict() for f in failures],
            view,
            attempt,
            kind="expectations",
            pii_policy=pii_policy,
        )
    return list(verdict.valid)
