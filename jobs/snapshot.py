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
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql

from connectors.definition import ConnectorDefinition
from connectors.status import connector_status
from core.errors import ConfigError, FeatureCtlError
from streams.offsets import watermarks
from streams.tail import observer

logger = logging.getLogger(__name__)

INCREMENTAL = "Incremental Snapshot"  # Debezium's aggregate_type of incremental snapshot notifications
STALL_S = 120.0  # a started snapshot silent this long is stalled (Debezium reports each chunk)
STATUS_EVERY_S = 10.0  # how often a waiting snapshot checks the connector's tasks


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
    data = _request(tables, conditions)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        limit = signal_data_limit(conn, signal_table)
        if limit is not None and len(data) > limit:
            raise ConfigError(
                f"snapshot request for {tables} is {len(data)} characters, over the {limit} that "
                f"{signal_table}.data holds",
                f"widen it (ALTER TABLE {signal_table} ALTER COLUMN data TYPE text; `featurectl db init` "
                "does so), or snapshot fewer keys at a time",
            )
        conn.execute(
            f"INSERT INTO {signal_table} (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
            (signal_id, data),
        )
    logger.info("requested an incremental snapshot of %s (signal %s)", ", ".join(tables), signal_id)
    return signal_id


def _request(tables: list[str], conditions: dict[str, str] | None) -> str:
    """The signal's ``data``: Debezium's execute-snapshot request, as JSON."""
    request: dict[str, object] = {"data-collections": tables, "type": "incremental"}
    if conditions:
        request["additional-conditions"] = [
            {"data-collection": t, "filter": f} for t, f in conditions.items()
        ]
    return json.dumps(request)


def signal_data_limit(conn: psycopg.Connection[Any], signal_table: str) -> int | None:
    """How many characters the signal table's ``data`` column holds (None: unbounded, as ``text``).

    Debezium documents ``varchar(2048)``; ``featurectl db init`` widens ours to ``text`` so that a repair
    of thousands of keys is one signal (one snapshot) instead of hundreds.
    """
    row = conn.execute(
        "SELECT CASE WHEN a.atttypmod > 4 AND t.typname IN ('varchar', 'bpchar') THEN a.atttypmod - 4 END "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'data' AND NOT a.attisdropped",
        (signal_table,),
    ).fetchone()
    if row is None:
        raise ConfigError(
            f"the signal table {signal_table} (signal.data.collection) has no data column, or does not exist",
            "create it with `featurectl db init`",
        )
    return None if row[0] is None else int(row[0])


# The signal table is captured like any table: a signal's row becomes a change event on Kafka, its data
# JSON-escaped once more, and a message over the producer's max.request.size (1 MB) fails the connector's task
# (RecordTooLargeException: every table's capture stops). A signal's data is held to this many characters.
SIGNAL_DATA_MAX = 256_000


def key_filters(
    conninfo: str,
    definition: ConnectorDefinition,
    table: str,
    columns: list[str],
    keys: list[tuple[Any, ...]],
) -> list[str]:
    """``additional-conditions`` filters selecting ``keys`` (values of ``columns``) from ``table``, as few
    as fit the signal table: each filter's request is at most its ``data`` column's width when encoded, and
    never over ``SIGNAL_DATA_MAX`` characters (the signal's own change event must fit a Kafka message).

    The filter is ``(c1, c2) IN (VALUES (v1::type1, v2::type2), (...))``: any key shape (uuid, text,
    composite), and Postgres hashes the VALUES list, so thousands of keys cost one hash probe per row
    Debezium's chunk queries read. The first row carries the columns' types; the others adopt them.
    """
    signal_table = definition.config["signal.data.collection"]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        limit = signal_data_limit(conn, signal_table)
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attname = ANY(%s) AND NOT attisdropped",
                (table, columns),
            ).fetchall()
        )
        missing = [c for c in columns if c not in types]
        if missing:
            raise ConfigError(f"{table} has no column {missing}", "check the view's cdc.key tag")

        def row(key: tuple[Any, ...], cast: bool) -> str:
            values = [sql.Literal(v).as_string(conn) for v in key]
            if cast:
                values = [f"{v}::{types[c]}" for v, c in zip(values, columns, strict=True)]
            return "(" + ", ".join(values) + ")"

        head = "(" + ", ".join(sql.Identifier(c).as_string(conn) for c in columns) + ") IN (VALUES "
        filters: list[str] = []
        width = SIGNAL_DATA_MAX if limit is None else min(limit, SIGNAL_DATA_MAX)
        budget: int | None = width - len(_request([table], {table: ""}))
        rows: list[str] = []
        used = 0

        def encoded(text: str) -> int:
            return len(json.dumps(text)) - 2  # the filter's length inside the request's JSON

        for key in keys:
            text = row(key, cast=not rows)
            cost = encoded(text) + (encoded(", ") if rows else 0)
            if budget is not None and rows and encoded(head) + used + cost + encoded(")") > budget:
                filters.append(head + ", ".join(rows) + ")")
                rows, used = [], 0
                text = row(key, cast=True)
                cost = encoded(text)
            if budget is not None and encoded(head) + cost + encoded(")") > budget:
                raise ConfigError(
                    f"the key {key} of {table} alone does not fit {signal_table}.data ({width} characters)",
                    f"widen it: ALTER TABLE {signal_table} ALTER COLUMN data TYPE text (`featurectl db init` "
                    "does so)",
                )
            rows.append(text)
            used += cost
        if rows:
            filters.append(head + ", ".join(rows) + ")")
        return filters


# Debezium's TableScanCompletionStatus values other than SUCCEEDED and EMPTY, and what they mean here.
_REASONS = {
    "NO_PRIMARY_KEY": "the table has no primary key, and the connector names no message.key.columns for it",
    "SQL_EXCEPTION": "its chunk query failed",
    "UNKNOWN_SCHEMA": "the connector does not know the table's schema: it is not captured, or not published",
    "SKIPPED": "the connector skipped it",
}
_FIXES = {
    "NO_PRIMARY_KEY": "give the table a primary key, or set message.key.columns in the connector for it "
    "(README, tables without a primary key)",
    "UNKNOWN_SCHEMA": "check `featurectl health` (capture checks), then request it again",
}


def _requested(tables: list[str], collection: str) -> str:
    """The requested table a notification's data collection names (it may carry the database too)."""
    return next((t for t in tables if collection == t or collection.endswith("." + t)), collection)


def _stop(conninfo: str, definition: ConnectorDefinition, tables: list[str]) -> None:
    """Signal ``stop-snapshot`` for ``tables``: a failed or stalled snapshot must not hold up later ones."""
    signal_table = definition.config["signal.data.collection"]
    data = json.dumps({"data-collections": tables, "type": "incremental"})
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {signal_table} (id, type, data) VALUES (%s, 'stop-snapshot', %s)",
                (f"featurectl-stop-{uuid.uuid4().hex[:12]}", data),
            )
        logger.info("signalled stop-snapshot for %s", ", ".join(tables))
    except psycopg.Error as exc:
        logger.warning("could not signal stop-snapshot for %s: %s", ", ".join(tables), exc)


def notifications(consumer: Consumer, deadline: float) -> Iterator[dict[str, object] | None]:
    """The notifications read until ``deadline``; None for each half second without one."""
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            yield None
            continue
        try:
            yield json.loads(msg.value() or b"{}")
        except ValueError:
            continue


def _check_connector(
    connect_url: str, definition: ConnectorDefinition, tables: list[str], signal_id: str
) -> None:
    """Raise at once if the connector or a task failed: the snapshot cannot go on."""
    try:
        status = connector_status(connect_url, definition.name)
    except FeatureCtlError as exc:  # Connect briefly unreachable: the snapshot may still be running
        logger.warning("snapshot %s: could not read the connector's status: %s", signal_id, exc)
        return
    if status.running:
        return
    trace = (status.trace or "").strip().splitlines()
    raise FeatureCtlError(
        f"incremental snapshot {signal_id} of {tables} cannot complete: connector {definition.name} is "
        f"{status.state} (tasks {status.tasks})" + (f": {trace[0][:300]}" if trace else ""),
        "read the trace (`featurectl connector status`), fix its cause, `featurectl connector restart`, "
        "then request the snapshot again",
    )


def snapshot(
    kafka: dict[str, Any],
    conninfo: str,
    definition: ConnectorDefinition,
    tables: list[str],
    wait_s: float | None,
    conditions: dict[str, str] | None = None,
    connect_url: str | None = None,
    stall_s: float = STALL_S,
) -> str:
    """Request the snapshot; with ``wait_s``, return only once Debezium reports it COMPLETED.

    Fails at once (FeatureCtlError naming the table and Debezium's reason) when Debezium skips or fails
    a table, when the connector or a task fails (checked through ``connect_url``), or when a started
    snapshot reports no progress for ``stall_s`` (Debezium reports every chunk); a failed, stalled or
    timed-out snapshot is stopped, so later requests are not held up behind it."""
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
        scanned: dict[str, int] = {}
        started, last_note, next_status = False, time.monotonic(), time.monotonic() + STATUS_EVERY_S
        for note in notifications(consumer, time.monotonic() + wait_s):
            now = time.monotonic()
            if (
                note is None
                or note.get("aggregate_type") != INCREMENTAL
                or note.get("id") not in (None, signal_id)
            ):
                if connect_url and now >= next_status:
                    next_status = now + STATUS_EVERY_S
                    _check_connector(connect_url, definition, tables, signal_id)
                if started and now - last_note > stall_s:
                    _stop(conninfo, definition, tables)
                    raise FeatureCtlError(
                        f"incremental snapshot {signal_id} of {tables} stalled: no progress from Debezium for "
                        f"{stall_s:.0f}s (it reports every chunk); stopped it, so later snapshots are not held up",
                        "read the Connect log for the table's chunk query, `featurectl connector restart`, then "
                        "request it again (a slow chunk query: a larger --stall, or a smaller "
                        "incremental.snapshot.chunk.size)",
                    )
                continue
            last_note = now
            kind, extra = note.get("type"), note.get("additional_data") or {}
            started = started or kind != "ABORTED"
            assert isinstance(extra, dict)
            logger.info("snapshot %s: %s %s", signal_id, kind, json.dumps(extra)[:200])
            if kind == "TABLE_SCAN_COMPLETED":
                table = _requested(
                    tables, str(extra.get("data_collection") or extra.get("scanned_collection"))
                )
                status = str(extra.get("status", "SUCCEEDED"))
                if status not in ("SUCCEEDED", "EMPTY"):
                    _stop(conninfo, definition, tables)
                    raise FeatureCtlError(
                        f"Debezium did not snapshot {table}: table scan {status} "
                        f"({_REASONS.get(status, 'see the Connect log')}); incremental snapshot {signal_id} "
                        "stopped, so later snapshots are not held up",
                        _FIXES.get(
                            status, "read the Connect log for the error, fix it, and request it again"
                        ),
                    )
                scanned[table] = int(extra.get("total_rows_scanned") or 0)
            if kind == "COMPLETED":
                skipped = [t for t in tables if t not in scanned]
                if skipped:
                    raise FeatureCtlError(
                        f"Debezium reported incremental snapshot {signal_id} completed without scanning "
                        f"{skipped}: it skipped them (the Connect log says why, e.g. 'Error while executing "
                        "incremental snapshot for table ... skipping')",
                        "fix what the Connect log names (`featurectl health` checks the captured tables), "
                        "then request it again",
                    )
                for table, rows in scanned.items():
                    logger.info("snapshot %s: %s: %d rows re-streamed", signal_id, table, rows)
                return signal_id
            if kind == "ABORTED":
                raise FeatureCtlError(
                    f"incremental snapshot {signal_id} was aborted: {extra}", "request it again"
                )
        _stop(conninfo, definition, tables)
        raise FeatureCtlError(
            f"incremental snapshot {signal_id} of {tables} not completed within {wait_s:.0f}s; stopped it, so "
            "later snapshots are not held up",
            "check `featurectl connector status` and the Connect log, then request it again with a longer "
            "--wait",
        )
    finally:
        if consumer is not None:
            consumer.close()


@dataclass
class TableSnapshot:
    """The outcome of the latest incremental snapshot that included a table."""

    table: str
    signal_id: str
    state: str  # running, paused, completed, skipped, stopped (stalled: running, silent too long)
    last_note_ms: int  # when Debezium last reported on it
    detail: str = ""


def _table_name(collection: str) -> str:
    """``schema.table`` of a data collection id (Debezium may prefix the database)."""
    return ".".join(collection.split(".")[-2:])


def last_snapshots(kafka: dict[str, Any], topic: str) -> dict[str, TableSnapshot]:
    """Per table, the latest incremental snapshot that included it, read from the notification topic
    (``notification.sink.topic.name``) from its start to its current end."""
    return snapshot_outcomes(read_notifications(kafka, topic))


def read_notifications(kafka: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    """Debezium's notifications on ``topic``, from its start to its current end, in the order written."""
    notes: list[dict[str, Any]] = []
    consumer = observer(kafka, from_beginning=True)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return notes
        ends = {}
        for p in metadata.partitions:
            low, high = watermarks(consumer, TopicPartition(topic, p))
            if high > low:
                ends[p] = high
        if not ends:
            return notes
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            if (msg.offset() or 0) + 1 >= ends.get(msg.partition() or 0, 0):
                ends.pop(msg.partition(), None)
            try:
                notes.append(json.loads(msg.value() or b"{}"))
            except ValueError:
                continue
    finally:
        consumer.close()
    return notes


_UNSCANNED = "completed without scanning it"


def snapshot_outcomes(notes: list[dict[str, Any]]) -> dict[str, TableSnapshot]:
    """Fold Debezium's incremental snapshot notifications into each table's latest snapshot. A table a
    COMPLETED snapshot never scanned was skipped; one named by ABORTED was stopped.

    ``notes`` may come from several partitions of the notification topic: Debezium keys a snapshot's
    notes by its id (so they keep their order in one partition) but an ABORTED by a fresh id, so the fold
    orders by Debezium's timestamp, keeping the given order among equal timestamps."""
    latest: dict[str, TableSnapshot] = {}
    tables_of: dict[str, list[str]] = {}
    for note in sorted(notes, key=lambda n: int(n.get("timestamp") or 0)):
        if note.get("aggregate_type") != INCREMENTAL:
            continue
        sid, kind = str(note.get("id")), str(note.get("type"))
        extra = note.get("additional_data") or {}
        when = int(note.get("timestamp") or 0)
        named = [_table_name(c) for c in str(extra.get("data_collections") or "").split(",") if c]
        if kind == "STARTED":
            tables_of[sid] = named
            for table in named:
                latest[table] = TableSnapshot(table, sid, "running", when)
            continue
        mine = [t for t in tables_of.get(sid, named) if t in latest and latest[t].signal_id == sid]
        for table in mine:
            latest[table].last_note_ms = when
        if kind == "TABLE_SCAN_COMPLETED":
            table = _table_name(str(extra.get("scanned_collection") or ""))
            if table in mine:
                status = str(extra.get("status", "SUCCEEDED"))
                ok = status in ("SUCCEEDED", "EMPTY")
                latest[table].state = "scanned" if ok else "skipped"
                latest[table].detail = (
                    f"{extra.get('total_rows_scanned', '?')} rows"
                    if ok
                    else f"table scan {status} ({_REASONS.get(status, 'see the Connect log')})"
                )
        elif kind == "COMPLETED":
            for table in mine:
                if latest[table].state == "scanned":
                    latest[table].state = "completed"
                elif latest[table].state != "skipped":
                    latest[table].state, latest[table].detail = "skipped", _UNSCANNED
        elif kind == "ABORTED":
            # Debezium stops the named tables (all of the snapshot's without names); stopping its only table
            # it first says COMPLETED, then ABORTED under an id of its own.
            targets = named or mine
            for table in [t for t in targets if t in latest]:
                snap = latest[table]
                if snap.state in ("running", "paused") or snap.detail == _UNSCANNED:
                    snap.state, snap.detail, snap.last_note_ms = (
                        "stopped",
                        "stopped before it was scanned",
                        when,
                    )
        elif kind in ("PAUSED", "RESUMED"):
            for table in mine:
                if latest[table].state in ("running", "paused"):
                    latest[table].state = "paused" if kind == "PAUSED" else "running"
    for snap in latest.values():
        if snap.state == "scanned":  # its own scan is done; others of the same request go on
            snap.state = "completed"
    return latest
