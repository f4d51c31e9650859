"""The dead-letter topic: every record the processor cannot materialise, with why.

A record keeps the original message (key and value, verbatim), where it came from (topic,
partition, offset), the reason, the failed expectations, the feature view and when it was
dead-lettered. Its Kafka key is the original key, so one entity's dead letters stay in order.

A record larger than Kafka accepts (``MAX_RECORD_BYTES``) keeps the head of the original value, its
size and SHA-256, and the pointer (topic, partition, offset): replay reads the original from there
while the source topic still retains it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from core import metrics
from core.errors import TransientError
from streams import pii
from streams.events import KafkaMessage

logger = logging.getLogger(__name__)
# Below the producer's and the broker's default limit (about 1 MB) with room for the envelope.
MAX_RECORD_BYTES = 900_000
HEAD_BYTES = 16_384
# Why a record became a dead letter, in few enough classes to label a metric with.
KINDS = (
    "decode",  # not a Debezium change event
    "expectations",  # failed its feature view's suite
    "join_key",  # no value for a join key
    "unchanged_toast",  # an unchanged TOASTed column with no previous value to fill in
    "view_config",  # the view's declaration, suite or embedding model is broken
    "write",  # a store refused the record itself (isolated from its batch)
    "backfill",  # a backfilled row the history could not take
    "schema",  # a feature column the row does not hold (renamed, dropped or excluded)
    "other",
)


def _text(raw: bytes | str | None) -> dict[str, str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return {"utf8": raw}
    try:
        return {"utf8": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def _bytes(field: dict[str, str] | None) -> bytes | None:
    if field is None:
        return None
    if "utf8" in field:
        return field["utf8"].encode()
    return base64.b64decode(field["base64"])


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record, as written to and read from the topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    failed_expectations: list[dict[str, Any]]
    feature_view: str | None
    dead_lettered_at: str
    attempt: int = 1
    truncated: bool = False  # the value was too large to keep: read it from the source offset
    kind: str = "other"  # the reason's class, a metric label: decode, expectations, join_key, ... (KINDS)
    pii: dict[str, str] = field(
        default_factory=dict
    )  # columns whose values ``value`` holds handled (streams/pii.py)

    def to_json(self) -> bytes:
        record: dict[str, Any] = {
            "reason": self.reason,
            "reason_kind": self.kind,
            "pii_handled": self.pii,
            "feature_view": self.feature_view,
            "failed_expectations": self.failed_expectations,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "original": {"key": _text(self.key), "value": _text(self.value)},
            "dead_lettered_at": self.dead_lettered_at,
            "attempt": self.attempt,
        }
        raw = json.dumps(record, default=str).encode()
        if len(raw) <= MAX_RECORD_BYTES or self.value is None:
            return raw
        record["original"] = {
            "key": _text(self.key),
            "value": None,
            "value_truncated": {
                "bytes": len(self.value),
                "sha256": hashlib.sha256(self.value).hexdigest(),
                "head": _text(self.value[:HEAD_BYTES]),
                "read_from": f"{self.topic}[{self.partition}] offset={self.offset}",
            },
        }
        record["failed_expectations"] = self.failed_expectations[:20]
        return json.dumps(record, default=str).encode()

    @staticmethod
    def from_json(raw: bytes) -> DeadLetter:
        d = json.loads(raw)
        truncated = "value_truncated" in d["original"]
        return DeadLetter(
            topic=d["source"]["topic"],
            partition=d["source"]["partition"],
            offset=d["source"]["offset"],
            key=_bytes(d["original"]["key"]),
            value=_bytes(d["original"]["value"]),
            reason=d["reason"],
            failed_expectations=d.get("failed_expectations", []),
            feature_view=d.get("feature_view"),
            dead_lettered_at=d["dead_lettered_at"],
            attempt=d.get("attempt", 1),
            truncated=truncated,
            kind=d.get("reason_kind", "other"),
            pii=d.get("pii_handled") or {},
        )

    # The KafkaMessage protocol, so a dead letter can be decoded and processed again on replay.
    def message(self) -> KafkaMessage:
        return _Replayed(self)


class _Replayed:
    __slots__ = ("_d",)

    def __init__(self, d: DeadLetter) -> None:
        self._d = d

    def topic(self) -> str:
        return self._d.topic

    def partition(self) -> int:
        return self._d.partition

    def offset(self) -> int:
        return self._d.offset

    def key(self) -> bytes | None:
        return self._d.key

    def value(self) -> bytes | None:
        return self._d.value

    def pii_handled(self) -> dict[str, str]:
        """Columns the value already holds handled: not to be handled again (streams/pii.py)."""
        return self._d.pii


class DeadLetterSink:
    """Buffers dead letters and produces them on ``flush`` (acks=all, idempotent producer)."""

    def __init__(self, kafka: dict[str, Any], topic: str) -> None:
        """``kafka``: the client settings (Settings.kafka_client())."""
        self.topic = topic
        self._producer = Producer(
            {
                **kafka,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # librdkafka's own lines (a broker still loading at start-up) through logging, not raw stderr.
                "logger": logging.getLogger("streams.dlq.producer"),
            }
        )
        self._pending: list[DeadLetter] = []

    def add(
        self,
        msg: KafkaMessage,
        reason: str,
        failed: list[dict[str, Any]] | None = None,
        view: str | None = None,
        attempt: int = 1,
        kind: str = "other",
        pii_policy: Mapping[str, str] | None = None,
    ) -> None:
        """Buffer ``msg`` with ``reason``; ``kind`` is one of KINDS. ``pii_policy`` (column -> handling, the
        strictest of the table's views): applied to the kept row images, so the topic never holds the raw
        values; columns the message already holds handled (a replayed dead letter's) are left as they are."""
        value = _raw(msg.value())
        handled = dict(getattr(msg, "pii_handled", dict)())
        todo = {c: h for c, h in (pii_policy or {}).items() if c not in handled}
        if todo:
            value = pii.mask_message(value, todo)
            handled.update(todo)
        letter = DeadLetter(
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            _raw(msg.key()),
            value,
            reason,
            failed or [],
            view,
            datetime.now(UTC).isoformat(),
            attempt,
            kind=kind if kind in KINDS else "other",
            pii=handled,
        )
        logger.warning(
            "%s[%s] offset=%s -> dead-letter topic %s: %s",
            letter.topic,
            letter.partition,
            letter.offset,
            self.topic,
            reason,
        )
        self._pending.append(letter)

    def discard(self) -> None:
        self._pending.clear()

    def flush(self, timeout_s: float = 30.0) -> int:
        """Produce and wait for every record's acknowledgement; raise TransientError otherwise."""
        if not self._pending:
            return 0
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        for letter in self._pending:
            self._producer.produce(self.topic, key=letter.key, value=letter.to_json(), on_delivery=delivered)
        remaining = self._producer.flush(timeout_s)
        if errors or remaining:
            # Drop what is still queued: the retried batch produces its letters again, and a queued copy
            # delivered once the topic heals would be a second dead letter for one record.
            self._producer.purge()
            self._producer.flush(0)
            raise TransientError(
                f"could not write {len(errors) or remaining} record(s) to dead-letter topic "
                f"{self.topic}: {errors[:1]}",
                "check that Kafka is reachable; the batch is retried",
            )
        for letter in self._pending:
            metrics.DEAD_LETTERS.labels(letter.feature_view or "", letter.kind).inc()
        count = len(self._pending)
        self._pending.clear()
        return count


def _raw(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value
