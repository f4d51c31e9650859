"""Debezium change events, decoded from Kafka messages into frozen values.

The connector writes JSON without embedded schemas (see connectors/shop-postgres.json):
``{"before": {...}|null, "after": {...}|null, "source": {...}, "op": "c|u|d|r|t", "ts_ms": ...}``,
with the primary key as the message key. A delete is followed by a *tombstone*: the same key
and a null value, which tells compacted topics to forget the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from core.errors import FeatureCtlError

_fast_decode = msgspec.json.Decoder().decode

OPS = {"c": "create", "u": "update", "d": "delete", "r": "read (snapshot)", "t": "truncate", "m": "message"}
TOMBSTONE = "tombstone"


class KafkaMessage(Protocol):
    """The parts of ``confluent_kafka.Message`` that decoding reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | str | None: ...
    def value(self) -> bytes | str | None: ...


class DecodeError(FeatureCtlError):
    """A message that is not a Debezium change event (terminal: it belongs in the dead-letter topic)."""


@dataclass(frozen=True, slots=True)
class TransactionMarker:
    """A BEGIN or END of a source transaction, from the connector's ``<prefix>.transaction`` topic; an END
    carries how many change events the transaction made (every captured table)."""

    topic: str
    partition: int
    offset: int
    status: str  # BEGIN or END
    id: str
    event_count: int | None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}] offset={self.offset}"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row change, with where it came from (Postgres commit time, LSN) and where it sits in Kafka."""

    topic: str
    partition: int
    offset: int
    key: dict[str, Any] | None
    op: str  # c, u, d, r, t, or "tombstone"
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source_ts_ms: int | None  # commit time in Postgres
    source_ts_us: int | None  # the same, to the microsecond
    lsn: int | None
    tx_id: int | None
    snapshot: str | None
    table: str | None
    sequence: tuple[int | None, int | None] | None = None  # Debezium source.sequence (stores/ordering.py)
    # The source transaction (``transaction.id``, ``transaction.total_order``: the change's place in it, from
    # 1) when the connector provides transaction metadata; None for snapshot reads (stores/transactions.py).
    txn: tuple[str, int] | None = None

    @property
    def is_tombstone(self) -> bool:
        return self.op == TOMBSTONE

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}] offset={self.offset}"


def _json(raw: bytes | str | None, what: str, where: str) -> Any:
    """Python's ``json.loads`` result, computed by msgspec (about 3.5x faster) when it can.

    msgspec refuses what ``json`` accepts (NaN/Infinity literals, numbers beyond a double, lone
    surrogates): those fall back to ``json``, so the result equals ``json.loads`` for every input.
    It keeps integers beyond 64 bits exact (orjson turns them into floats, so not orjson).
    """
    if raw is None:
        return None
    try:
        return _fast_decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(
            f"{where}: message {what} is not valid JSON ({exc})",
            "the record goes to the dead-letter topic; check the producer of this topic",
        ) from None


def _sequence(raw: Any) -> tuple[int | None, int | None] | None:
    """``source.sequence``: a JSON string of two LSNs as strings, either may be null."""
    try:
        pair = _json(raw, "source.sequence", "") if isinstance(raw, str) else raw
        if isinstance(pair, list) and len(pair) == 2:
            return (
                int(pair[0]) if pair[0] is not None else None,
                int(pair[1]) if pair[1] is not None else None,
            )
    except (ValueError, TypeError, DecodeError):
        pass
    return None


def transaction_key(raw_id: Any) -> str:
    """The part of a Debezium transaction id that names the transaction. The PostgreSQL connector writes
    ``<xid>:<lsn>`` (DBZ-5329) with the LSN of the event at hand: it differs between the changes of one
    transaction and its END (seen: changes ``739:26540176`` and ``739:26540264``, END ``739:26540400``), so the
    xid alone is the key. Xids repeat only after 2^32 transactions; the store forgets a transaction once released."""
    return str(raw_id).split(":", 1)[0]


def _txn(raw: Any, where: str) -> tuple[str, int] | None:
    """An envelope's ``transaction`` block: (its transaction_key, total_order), or None where there is none."""
    if raw is None:
        return None
    try:
        return transaction_key(raw["id"]), int(raw["total_order"])
    except (KeyError, TypeError, ValueError):
        raise DecodeError(
            f"{where}: 'transaction' is not an object with 'id' and 'total_order' ({str(raw)[:200]})",
            "the record goes to the dead-letter topic; check the connector's transaction metadata",
        ) from None


def decode_marker(msg: KafkaMessage) -> TransactionMarker:
    """Decode one message of the transaction topic; raises DecodeError if it is not a BEGIN/END marker."""
    topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
    where = f"{topic}[{partition}] offset={offset}"
    value = _json(msg.value(), "value", where)
    if (
        not isinstance(value, dict)
        or value.get("status") not in ("BEGIN", "END")
        or value.get("id") is None
        or (value["status"] == "END" and not isinstance(value.get("event_count"), int))
    ):
        raise DecodeError(
            f"{where}: not a Debezium transaction marker (status BEGIN/END, id, event_count)",
            "nothing else may write to the connector's transaction topic",
        )
    return TransactionMarker(
        topic, partition, offset, value["status"], transaction_key(value["id"]), value.get("event_count")
    )


def decode(msg: KafkaMessage) -> ChangeEvent:
    """Decode one Kafka message; raises DecodeError if it is not a Debezium envelope."""
    topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
    where = f"{topic}[{partition}] offset={offset}"
    key = _json(msg.key(), "key", where)
    value = _json(msg.value(), "value", where)
    if key is not None and not isinstance(key, dict):
        raise DecodeError(
            f"{where}: key is {type(key).__name__}, expected a JSON object of primary-key columns"
        )
    if value is None:
        return ChangeEvent(
            topic, partition, offset, key, TOMBSTONE, None, None, None, None, None, None, None, None
        )
    if not isinstance(value, dict) or value.get("op") not in OPS:
        raise DecodeError(
            f"{where}: value is not a Debezium envelope (no valid 'op' field)",
            "check that the connector uses JsonConverter with schemas.enable=false",
        )
    source = value.get("source") or {}
    if not isinstance(source, dict):
        raise DecodeError(f"{where}: 'source' is not an object")
    table = f"{source.get('schema')}.{source.get('table')}" if source.get("table") else None
    return ChangeEvent(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        op=value["op"],
        before=value.get("before"),
        after=value.get("after"),
        source_ts_ms=source.get("ts_ms"),
        source_ts_us=source.get("ts_us"),
        lsn=source.get("lsn"),
        sequence=_sequence(source.get("sequence")),
        tx_id=source.get("txId"),
        snapshot=str(source["snapshot"]) if source.get("snapshot") not in (None, "false") else None,
        table=table,
        txn=_txn(value.get("transaction"), where),
    )
