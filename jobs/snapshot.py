"""Re-stream tables through the live pipeline: a Debezium incremental snapshot, requested through the
connector's signal table, while streaming goes on (Debezium interleaves snapshot chunks with live
changes and drops a chunk's rows that changed meanwhile, so no stale row overtakes a newer change).

The snapshot's rows arrive as ``op = "r"`` events on the tables' usual topics; the processor writes
them like any change (never over a newer version). Completion is read from the connector's
notification topic (``notification.sink.topic.name``): Debezium reports each snapshot's progress
and its COMPLETED there.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from connectors.definition import ConnectorDefinition
from featurectl.errors import ConfigError, FeatureCtlError
from streams.offsets import watermarks
from streams.tail import observer

logger = logging.getLogger(__name__)


def _notifications_at_end(kafka: dict[str, Any], topic: str) -> Consumer:
    """A consumer positioned at the current end of the notification topic (or its start if new)."""
    consumer = observer(kafka, from_beginning=True)
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        consumer.assign([TopicPartition(topic, 0, 0)])  # created by the connector's first notification
        return consumer
    parts = []
    for p in metadata.partitions:
        _, high = watermarks(consumer, TopicPartition(topic, p))
        parts.append(TopicPartition(topic, p, high))
    consumer.assign(parts)
    return consumer


def request_snapshot(
    conninfo: str,
    definition: ConnectorDefinition,
    tables: list[str],
    conditions: dict[str, str] | None = None,
) -> str:
    """Insert an ``execute-snapshot`` signal (incremental) for ``tables``; returns the signal id.

    ``conninfo``: a role allowed to INSERT into the signal table; the Debezium role is (stack/sql/cdc.sql).

    ``conditions``: per table, a SQL filter restricting the snapshot to some rows (Debezium's
    ``additional-conditions``), e.g. ``{"public.customers": "id IN (1, 2)"}``.
    """
    signal_table = definition.config.get("signal.data.collection")
    captured = definition.config.get("table.include.list", "").split(",")
    if not signal_table or signal_table not in captured:
        raise ConfigError(
            f"connector {definition.name} captures no signal table, so it cannot take snapshot signals",
            "set signal.data.collection and add that table to table.include.list (connectors/shop-postgres.json)",
        )
    unknown = [t for t in tables if t not in captured]
    if unknown:
        raise ConfigError(
            f"connector {definition.name} does not capture {unknown}", f"name tables among {captured}"
        )
    signal_id = f"featurectl-{uuid.uuid4().hex[:12]}"
    request: dict[str, object] = {"data-collections": tables, "type": "incremental"}
    if conditions:
        request["additional-conditions"] = [
            {"data-collection": t, "filter": f} for t, f in conditions.items()
        ]
    data = json.dumps(request)
    if len(data) > 2048:  # the signal table's data column (varchar(2048))
        raise ConfigError(
            f"snapshot request for {tables} is {len(data)} characters, over the signal table's 2048",
            "snapshot fewer keys at a time, or the whole table",
        )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {signal_table} (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
            (signal_id, data),
        )
    logger.info("requested an incremental snapshot of %s (signal %s)", ", ".join(tables), signal_id)
    return signal_id


def notifications(consumer: Consumer, deadline: float) -> Iterator[dict[str, object]]:
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        try:
            yield json.loads(msg.value() or b"{}")
        except ValueError:
            continue


def snapshot(
    kafka: dict[str, Any],
    conninfo: str,
    definition: ConnectorDefinition,
    tables: list[str],
    wait_s: float | None,
    conditions: dict[str, str] | None = None,
) -> str:
    """Request the snapshot; with ``wait_s``, return only once Debezium reports it COMPLETED."""
    topic = definition.config.get("notification.sink.topic.name")
    consumer = _notifications_at_end(kafka, topic) if wait_s and topic else None
    if wait_s and not topic:
        raise ConfigError(
            f"connector {definition.name} has no notification topic, so completion cannot be observed",
            "set notification.enabled.channels=sink and notification.sink.topic.name, or run without --wait",
        )
    try:
        signal_id = request_snapshot(conninfo, definition, tables, conditions)
        if consumer is None or wait_s is None:
            return signal_id
        for note in notifications(consumer, time.monotonic() + wait_s):
            if note.get("aggregate_type") != "Incremental Snapshot":
                continue
            kind, extra = note.get("type"), note.get("additional_data") or {}
            logger.info("snapshot %s: %s %s", signal_id, kind, json.dumps(extra)[:200])
            if kind == "COMPLETED":
                return signal_id
            if kind == "ABORTED":
                raise FeatureCtlError(
                    f"incremental snapshot {signal_id} was aborted: {extra}", "request it again"
                )
        raise FeatureCtlError(
            f"incremental snapshot {signal_id} not completed within {wait_s:.0f}s",
            "it goes on in the connector; check `featurectl connector status` and the Connect log",
        )
    finally:
        if consumer is not None:
            consumer.close()
