"""Which failures of a batch are worth retrying (transient) and which belong to a record (terminal).

Transient: the world may heal (a broker or disk not reachable, an online store restarting or failing
over, a locked database, a model change not yet seen): back off and retry the batch without committing. Terminal: a record that cannot be
written however often it is tried (a value the store cannot represent, a timestamp outside Python's
range, a declaration the sink refuses): retrying would stop every table behind it forever, so the
processor isolates the record and dead-letters it with the reason (streams/processor.py).
"""

from __future__ import annotations

from confluent_kafka import KafkaException
from google.protobuf.message import DecodeError

from core.errors import FeatureCtlError
from stores.registry import classify


def is_transient(exc: BaseException) -> bool:
    """True for failures that may succeed on retry; everything else is the record's own fault."""
    if isinstance(exc, FeatureCtlError):
        return exc.transient
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        return bool(getattr(err, "retriable", lambda: True)())
    if isinstance(exc, DecodeError):
        # Feast's file registry is rewritten in place (truncate, then write): a read in between sees a
        # truncated protobuf. The next read sees the whole file.
        return True
    # Each store tells its driver's errors apart (stores/<name>/errors.py): a store restarting, failing
    # over or locked is a wait, never a dead letter. (The history's storage full or unwritable is a
    # TransientError from its writer: stores/history/delta.py.)
    verdict = classify(exc)
    if verdict is not None:
        return verdict
    # Unreachable service, full disk, lost connection: not the record's fault.
    return isinstance(exc, OSError | ConnectionError | TimeoutError | MemoryError)


def away(exc: BaseException) -> str:
    """Which part a transient failure says is away, for the processor's one line."""
    if isinstance(exc, KafkaException):
        return "Kafka is not reachable"
    return "the store is not reachable"


def describe(exc: BaseException) -> str:
    """A one-line reason for a dead letter: the exception's type and message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__
