"""The platform's Prometheus metrics: one registry, served by ``featurectl process|<job> --metrics-port``.

Names follow Prometheus conventions (base units in the name, ``_total`` on counters, added by the
client) and reuse Feast's where Feast has the same measure (``feast_materialization_*``). Labels are
of low cardinality: feature view, Kafka topic and partition, stage, job, slot, connector; never an
entity key. Counters move when a sink's write is durable (a flush), not when a row is read.

Feast sets ``PROMETHEUS_MULTIPROCESS_DIR`` when it is imported, which puts prometheus-client in
multiprocess mode (values in mmap files): our metrics live in their own registry and are read
directly from it, which works in either mode (``Gauge.set_function`` does not: not used).
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from core.errors import FeatureCtlError
from core.health import HEALTH

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- the stream processor ----------------------------------------------------------------------
COMMIT_TO_ONLINE = Histogram(
    "featurectl_commit_to_online_seconds",
    "Freshness: from a change's Postgres commit to its online-store write being durable",
    ["feature_view"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ROWS_WRITTEN = Counter(
    "featurectl_rows_written",
    "Rows (upserts and deletes) applied to the online store",
    ["feature_view"],
    registry=REGISTRY,
)
ROWS_SKIPPED_OLDER = Counter(
    "featurectl_rows_skipped_older",
    "Rows not applied because the online store already held a newer version of the entity",
    ["feature_view"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "featurectl_dead_letters",
    "Records written to the dead-letter topic, by feature view ('' if none) and reason kind",
    ["feature_view", "reason"],
    registry=REGISTRY,
)
PROCESSOR_WAITING = Gauge(
    "featurectl_processor_waiting",
    "1 while the processor re-reads a batch a store or Kafka could not take (a restart, a failover: it "
    "waits with backoff and does not exit), 0 once a batch is written",
    registry=REGISTRY,
)
BATCH_RETRIES = Counter(
    "featurectl_batch_retries",
    "Batches re-read after a failure, by the error's type",
    ["error"],
    registry=REGISTRY,
)
TRANSACTIONS_RELEASED = Counter(
    "featurectl_transactions_released",
    "Source transactions made visible in the online store as a whole (stores/transactions.py)",
    registry=REGISTRY,
)
TRANSACTIONS_PARTIAL = Counter(
    "featurectl_transactions_released_partial",
    "Source transactions made visible without atomicity: too large to hold, or their END waited too long",
    registry=REGISTRY,
)
TRANSACTIONS_WAITING = Gauge(
    "featurectl_transactions_waiting",
    "Source transactions whose END was read but which are not yet visible online (this writer's last look)",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "featurectl_consumer_lag",
    "Messages between the processor's committed offset and the partition's end (librdkafka statistics)",
    ["topic", "partition"],
    registry=REGISTRY,
)
BATCH_DURATION = Histogram(
    "featurectl_batch_duration_seconds",
    "One micro-batch, from its poll to its offsets committed",
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
BATCH_MESSAGES = Histogram(
    "featurectl_batch_messages",
    "Messages per micro-batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "featurectl_stage_duration_seconds",
    "Time spent per batch in each stage: transform (decode, route, cast), validate, embed, "
    "online_write, offline_write, dead_letter_write, commit",
    ["stage"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)

# --- jobs --------------------------------------------------------------------------------------
JOB_RUNS = Counter(
    "featurectl_job_runs",
    "Runs of a job (backfill, materialize, compact, snapshot, ...) by outcome (success, failure)",
    ["job", "outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "featurectl_job_duration_seconds",
    "Duration of a job's run",
    ["job"],
    buckets=(1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
    registry=REGISTRY,
)
JOB_LAST_RUN = Gauge(
    "featurectl_job_last_run_timestamp_seconds",
    "Unix time a job's last run ended, by its outcome",
    ["job", "outcome"],
    registry=REGISTRY,
)
# Feast's own names (feast/metrics.py), for the same measure taken by our materialize job.
MATERIALIZATION_RESULT = Counter(
    "feast_materialization_result",
    "Materialization runs per feature view",
    ["feature_view", "status"],
    registry=REGISTRY,
)
MATERIALIZATION_DURATION = Histogram(
    "feast_materialization_duration_seconds",
    "Duration of materialization per feature view in seconds",
    ["feature_view"],
    buckets=(1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
    registry=REGISTRY,
)

# --- feature drift (monitoring/drift/report.py), set by each `featurectl drift` run ----------------
FEATURE_DRIFT = Gauge(
    "featurectl_feature_drift",
    "A feature's drift score against its view's reference (metric: psi, ks, wasserstein, ...)",
    ["feature_view", "feature", "metric"],
    registry=REGISTRY,
)
FEATURE_DRIFTING = Gauge(
    "featurectl_feature_drifting",
    "1 when any drift score of the feature passed its threshold in the last check",
    ["feature_view", "feature"],
    registry=REGISTRY,
)
FEATURE_NULL_RATIO = Gauge(
    "featurectl_feature_null_ratio",
    "Share of null values of a feature in the drift check's current window",
    ["feature_view", "feature"],
    registry=REGISTRY,
)
DRIFT_ROWS = Gauge(
    "featurectl_drift_rows",
    "Changes in the drift check's samples (sample: current or reference)",
    ["feature_view", "sample"],
    registry=REGISTRY,
)
DRIFT_CHECKED = Gauge(
    "featurectl_drift_checked_timestamp_seconds",
    "Unix time of a view's last drift check",
    ["feature_view"],
    registry=REGISTRY,
)

# --- training equals serving (monitoring/consistency.py), set by each `featurectl consistency` run -----------
CONSISTENCY_VALUES = Gauge(
    "featurectl_consistency_values",
    "Served values of a logged feature service's feature in the last check, by outcome (matched, "
    "missing_online, missing_offline, different; lag and skew split the three that did not match)",
    ["feature_service", "feature", "outcome"],
    registry=REGISTRY,
)
CONSISTENCY_SKEW = Gauge(
    "featurectl_consistency_skew",
    "Served values the history never held as of their request (real skew, not freshness lag), last check",
    ["feature_service", "feature"],
    registry=REGISTRY,
)
CONSISTENCY_CHECKED = Gauge(
    "featurectl_consistency_checked_timestamp_seconds",
    "Unix time of a feature service's last consistency check",
    ["feature_service"],
    registry=REGISTRY,
)

# --- the source: replication slot and connector (monitoring/watch.py) ----------------------------
SLOT_RETAINED_WAL = Gauge(
    "featurectl_replication_slot_retained_wal_bytes",
    "WAL the slot keeps Postgres from removing: pg_current_wal_lsn() - restart_lsn",
    ["slot"],
    registry=REGISTRY,
)
SLOT_ACTIVE = Gauge(
    "featurectl_replication_slot_active",
    "1 while a consumer (Debezium) is connected to the slot",
    ["slot"],
    registry=REGISTRY,
)
SLOT_FLUSH_LAG = Gauge(
    "featurectl_replication_slot_confirmed_flush_lag_bytes",
    "WAL written since the position Debezium last confirmed: pg_current_wal_lsn() - confirmed_flush_lsn",
    ["slot"],
    registry=REGISTRY,
)
SLOT_SAFE_WAL = Gauge(
    "featurectl_replication_slot_safe_wal_size_bytes",
    "WAL that can still be written before the slot is invalidated by max_slot_wal_keep_size "
    "(absent when it is unlimited)",
    ["slot"],
    registry=REGISTRY,
)
CONNECTOR_STATE = Gauge(
    "featurectl_connector_state",
    "1 for the connector's current state (RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING), 0 others",
    ["connector", "state"],
    registry=REGISTRY,
)
CONNECTOR_TASK_STATE = Gauge(
    "featurectl_connector_task_state",
    "1 for each task's current state, 0 for the others",
    ["connector", "task", "state"],
    registry=REGISTRY,
)
WATCH_UP = Gauge(
    "featurectl_watch_up",
    "1 if the last probe of this target (postgres, connect) answered",
    ["target"],
    registry=REGISTRY,
)

CONNECT_STATES = ("RUNNING", "PAUSED", "STOPPED", "FAILED", "UNASSIGNED", "RESTARTING")


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, as one increment per bucket: observing a batch's
    rows one by one was ~5% of the processor's time (each observe locks and writes mmap'd values in
    multiprocess mode). prometheus-client has no bulk observe; this uses its bucket and sum values,
    checked against ``observe`` by tests/unit/test_metrics.py."""
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1  # observe's bucket: the first bound >= value
        total += value
    if not any(counts):
        return
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def set_state(gauge: Gauge, current: str, labels: Iterable[str]) -> None:
    """A state set: 1 on ``current``'s series, 0 on the others (so a change is visible as such)."""
    for state in CONNECT_STATES:
        gauge.labels(*labels, state).set(1.0 if state == current else 0.0)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics``, and ``/healthz`` and ``/readyz`` (core/health.py: 200 or 503 with the reason, JSON),
    on ``host:port`` from a daemon thread."""
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, why = HEALTH.live() if path == "/healthz" else HEALTH.readiness()
            body = json.dumps({"status": "ok" if ok else "failing", "detail": why}).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise FeatureCtlError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
            "pick a free port with --metrics-port (`ss -ltnp` lists the ones in use)",
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics: http://%s:%d/metrics (health: /healthz, /readyz)", host, port)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request (a slow scrape never holds a probe), none outliving the process."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not worth a log line
        pass


@contextmanager
def materialization_metrics(view: str) -> Iterator[None]:
    """Count one view's materialization under Feast's names: status success or failure, and its duration."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        MATERIALIZATION_RESULT.labels(view, "failure").inc()
        raise
    finally:
        MATERIALIZATION_DURATION.labels(view).observe(time.perf_counter() - started)
    MATERIALIZATION_RESULT.labels(view, "success").inc()
