"""The shipper of served logs: spool files (serving/served_log.py) -> each feature service's log table.

    python -m serving.log_shipper --repo feature_repo --spool data/logs/_spool/127.0.0.1-6566

Runs beside the feature server's processes (serving/feature_server.py starts and stops it), at nice 19.
Every ``--interval`` seconds it takes the whole spool files, decodes each lookup (the request's entity keys, the
response's values, statuses and event times) into rows of Feast's log schema (stores/history/served.py), appends
each file's rows to the log tables in one commit per service, marked with the file's name and number, then
deletes the file. A file shipped whose deletion was lost (a crash between the two) is recognised by its mark and
not written twice. On SIGTERM it ships what the spool holds and exits. A record it cannot decode (a service
removed from the registry, a column it no longer has) is logged and counted, never stops the others.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from serving.served_log import read_records, spool_files

logger = logging.getLogger(__name__)

STATUS = {"INVALID": 0, "PRESENT": 1, "NULL_VALUE": 2, "NOT_FOUND": 3, "OUTSIDE_MAX_AGE": 4}
# Feast's log schema types a served value's event time as seconds (what its Go server wrote); here it keeps the
# history's microseconds, so a served value is matched to the very change it came from.
EVENT_TIME = pa.timestamp("us", tz="UTC")
_decode = msgspec.json.Decoder().decode


def log_schema(store: Any, service: Any) -> pa.Schema:
    """Feast's log schema of ``service`` (``FeatureServiceLoggingSource``), event times in microseconds."""
    from feast.feature_logging import FeatureServiceLoggingSource

    schema = FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
    return pa.schema([pa.field(f.name, EVENT_TIME) if f.name.endswith("__timestamp") else f for f in schema])


def to_table(records: list[tuple[int, bytes, bytes, bytes]], schema: pa.Schema, stem: str) -> pa.Table:
    """Rows of one service's log from its spool records (all with the same service): one per entity row of each
    lookup, its request id ``<spool file>-<record>``."""
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    times: list[int] = []
    ids: list[str] = []
    for i, (t_ns, header, _request, response) in enumerate(records):
        head = _decode(header)
        results = _decode(response)["results"]
        rows = len(results[0]["values"])
        seen = set()
        for position, (name, result) in enumerate(zip(head["columns"], results, strict=True)):
            if name not in columns:
                continue
            seen.add(name)
            columns[name] += result["values"]
            if position >= head["keys"]:
                for suffix, values in (
                    ("__status", [STATUS.get(s, 0) for s in result["statuses"]]),
                    ("__timestamp", result["event_timestamps"]),
                ):
                    if name + suffix in columns:
                        columns[name + suffix] += values
                        seen.add(name + suffix)
        for name, values in columns.items():  # a column the service has now but this lookup had not
            if name not in seen and not name.startswith("__"):
                values += [None] * rows
        times += [t_ns] * rows
        ids += [f"{stem}-{i}"] * rows
    columns["__log_timestamp"] = times
    columns["__request_id"] = ids
    arrays = []
    for field in schema:
        values = columns[field.name]
        if field.name == "__log_timestamp":
            arrays.append(pa.array(values, pa.timestamp("ns", tz="UTC")).cast(field.type, safe=False))
        elif field.name == "__log_date":
            arrays.append(
                pa.array(columns["__log_timestamp"], pa.timestamp("ns", tz="UTC")).cast(pa.date32())
            )
        elif field.name.endswith("__timestamp"):
            stamps = pa.array(values, pa.string()).cast(pa.timestamp("ns", tz="UTC"))
            arrays.append(stamps.cast(field.type, safe=False))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class Shipper:
    """Ships one spool directory into the log tables of the services its records name."""

    def __init__(self, repo: Path, spool: Path) -> None:
        self.repo = repo
        self.spool = spool
        self.store: Any = None
        self.shipped_rows = 0
        self.failed_records = 0

    def _store(self) -> Any:
        if self.store is None:  # Feast's import takes seconds: only once there is something to ship
            from feast import FeatureStore

            self.store = FeatureStore(repo_path=str(self.repo))
        return self.store

    def ship(self) -> int:
        """Ship every whole spool file; returns the rows written."""
        files = spool_files(self.spool)
        if not files:
            return 0
        store = self._store()
        store.refresh_registry()
        written = 0
        for path in files:
            written += self._ship_file(store, path)
            path.unlink()
        self.shipped_rows += written
        return written

    def _ship_file(self, store: Any, path: Path) -> int:
        from stores.history import served

        stem = path.name.removesuffix(".log")
        writer, _, seq = stem.rpartition("-")
        by_service: dict[str, list[tuple[int, bytes, bytes, bytes]]] = {}
        for record in read_records(path):
            try:
                name = _decode(record[1])["service"]
            except (msgspec.DecodeError, KeyError, TypeError):
                self.failed_records += 1
                logger.error("served log: %s holds a record without a readable header; skipped", path)
                continue
            by_service.setdefault(name, []).append(record)
        written = 0
        for name, records in by_service.items():
            try:
                service = store.get_feature_service(name, allow_cache=True)
                table = to_table(records, log_schema(store, service), stem)
                target = served.log_path(service, store.config.repo_path)
            except Exception as exc:  # the service or its columns changed since: say what, keep shipping
                self.failed_records += len(records)
                logger.error(
                    "served log: %d lookup(s) of %s in %s not logged: %s", len(records), name, path, exc
                )
                continue
            if served.append(target, table, (f"served-log:{writer}", int(seq))):
                written += table.num_rows
                logger.info(
                    "served log: %d row(s) of %s from %s -> %s", table.num_rows, name, path.name, target
                )
            else:
                logger.info("served log: %s was already shipped to %s", path.name, target)
        return written


def run(repo: Path, spool: Path, interval_s: float, stop: threading.Event) -> Shipper:
    """Ship every ``interval_s`` until ``stop``, then once more (what the servers wrote as they stopped)."""
    shipper = Shipper(repo, spool)
    while True:
        stopping = stop.is_set()
        try:
            shipper.ship()
        except Exception:  # a log table unwritable for now: the spool keeps the files, retried next pass
            logger.exception("served log: shipping %s failed; retrying in %.0f s", spool, interval_s)
            if stopping:
                raise
        if stopping:
            return shipper
        stop.wait(interval_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # Lookups, the load they come with and ingest go first (the servers run real-time anyway); nice 19, not
    # SCHED_IDLE: on a host whose cores are never idle SCHED_IDLE starved the shipper for minutes (a CI run beside
    # it), the spool grew, and a clean stop waited for it. The spool holds what is not shipped yet, bounded
    # (serving/served_log.py).
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    stop = threading.Event()

    def stopping(*_: object) -> None:
        # The last pass is what a clean stop waits for: at normal priority if allowed (root), not behind the host.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    started = time.monotonic()
    shipper = run(args.repo, args.spool, args.interval, stop)
    logger.info(
        "served log: shipper stops after %.0f s: %d row(s) shipped, %d record(s) not logged",
        time.monotonic() - started,
        shipper.shipped_rows,
        shipper.failed_records,
    )


if __name__ == "__main__":
    main()
