"""The stream processor's loop: poll a micro-batch -> pipeline -> flush sinks -> commit offsets.

Delivery: at-least-once from Kafka, made exactly-once in effect by idempotent sinks. Offsets are
committed only after every sink has flushed; on a sink failure the batch is re-read from its
first offsets after a back-off, and nothing is committed. N copies in one consumer group share
the partitions; a copy that lost its partitions is fenced off the stores (streams/fencing.py).
SIGTERM/SIGINT: the current batch is finished, flushed and committed, then exit.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from feast import FeatureStore

from core import metrics
from core.errors import ConfigError, FeatureCtlError, RetentionGapError, SourceChangedError
from core.health import HEALTH
from core.settings import Settings
from embeddings.models import load_embedder
from stores.history.sink import HistorySink
from stores.registry import open_online_sink
from streams.cut import Tally, Where, carry, where
from streams.dlq import DeadLetterSink
from streams.events import ChangeEvent
from streams.faults import away, describe, is_transient
from streams.fencing import Claims, owner_name
from streams.incarnation import TopicIds
from streams.isolate import write_isolating
from streams.offsets import Gap, next_offsets, rewind, start_offsets, watermarks
from streams.pipeline import BatchStats, Pipeline
from streams.routes import load_routes
from validation.suites import SuiteStore
from validation.validator import BatchValidator

logger = logging.getLogger(__name__)


IDLE_S = 0.5  # longest a consume waits while nothing arrives (the loop then checks for a stop)
# A batch that holds part of a source transaction waits this long for the rest, at most this many times
# (streams/cut.py): a change and its END reach the consumer within a millisecond of each other.
TOP_UP_WAIT_S = 0.001
TOP_UP_ROUNDS = 3
LOOK_AGAIN_S = 30.0  # after a failed lookup of the topics' partitions (Kafka away)


@dataclass
class ProcessorConfig:
    topic_prefix: str
    group_id: str
    max_batch: int = 5000
    linger_s: float = 0.0
    registry_refresh_s: float = 5.0
    report_every_s: float = 10.0
    max_poll_interval_ms: int = 300_000
    accept_gaps: bool = False  # read on past changes retention deleted (logged), instead of stopping

    @classmethod
    def from_settings(
        cls, settings: Settings, topic_prefix: str, group_id: str | None = None, accept_gaps: bool = False
    ) -> ProcessorConfig:
        return cls(
            topic_prefix,
            group_id or settings.processor_group,
            settings.batch_max_rows,
            settings.batch_linger_ms / 1000,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            accept_gaps=accept_gaps,
        )


def build_pipeline(settings: Settings, store: FeatureStore, live: bool = True) -> Pipeline:
    """The stream's pipeline. ``live=False`` (a dead-letter replay): rows carry positions already read
    once, which the history must take again, so they are appended without once-per-position marks."""
    online = open_online_sink(store)
    online.limit_transactions(settings.atomic_transactions, settings.txn_max_rows, settings.txn_max_wait_s)
    return Pipeline(
        online=online,
        # Live positions are written to a Delta history once, whichever processor reads them again.
        offline=HistorySink(
            store,
            writer_id=uuid.uuid4().hex[:8],
            incarnation=TopicIds(settings.kafka_client()) if live else None,
        ),
        dead_letters=DeadLetterSink(settings.kafka_client(), settings.dlq_topic),
        validator=BatchValidator(SuiteStore(settings.suites_dir)),
    )


class Processor:
    """Consumes the connector's topics and materialises features. Constructing it connects nothing."""

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        config: ProcessorConfig,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.config = config
        self.pipeline = pipeline or build_pipeline(settings, store)
        # The connector's transaction markers (provide.transaction.metadata; Debezium's default topic.transaction):
        # the pattern below matches their topic too, and the online store keeps transactions whole by them.
        self.pipeline.transaction_topic = f"{config.topic_prefix}.transaction"
        self.consumer: Consumer | None = None
        self.assigned = threading.Event()  # set once the group has given this copy its partitions
        self.processed = 0  # rows written to the stores
        self.dead_lettered = 0  # records sent to the dead-letter topic
        self._routes_loaded_at = 0.0
        self.claims = Claims(self.pipeline.online, owner_name(config.group_id))
        self._gaps: list[Gap] = []  # found in a rebalance callback, raised by the loop
        self._gap_accepted = False  # found and read past (accept_gaps): the online store is told, by the loop
        # The connector's topics (its transaction markers among them), and whether this copy reads all of their
        # partitions (None: to look up again, the assignment moved).
        self._pattern = f"^{re.escape(config.topic_prefix)}\\..*"
        self._alone: bool | None = None
        self._look_again_at = math.inf  # set when a lookup failed
        # Read, not processed yet: the tail of a full batch past its last whole transaction (streams/cut.py),
        # first in the next batch; its change events decoded already.
        self._carried: list[Message] = []
        self._carried_events: dict[Where, ChangeEvent] = {}

    def _consumer(self) -> Consumer:
        return Consumer(
            self.settings.kafka_client(
                **{
                    "group.id": self.config.group_id,
                    # Names the process in the group's member list (kafka-consumer-groups --describe --members).
                    "client.id": f"featurectl-processor-{socket.gethostname()}-{os.getpid()}",
                    "enable.auto.commit": False,  # committed by hand, after the sinks flushed
                    # Never jump silently: a partition without a usable committed offset gets its start
                    # from _on_assign, and one that falls behind retention while running is an error.
                    "auto.offset.reset": "error",
                    "partition.assignment.strategy": "cooperative-sticky",
                    # A crashed copy's partitions move to the others after this long.
                    "session.timeout.ms": 10000,
                    # A copy stuck in one batch longer than this leaves the group; fencing keeps it off the stores.
                    "max.poll.interval.ms": self.config.max_poll_interval_ms,
                    # New topics matching the pattern (a new table, or a table's first change on a fresh
                    # stack) are found this quickly; metadata requests are cheap.
                    "topic.metadata.refresh.interval.ms": 1000,
                    # Per-partition consumer lag for /metrics (served from consume(), so never concurrently).
                    "statistics.interval.ms": 5000,
                    "stats_cb": self._on_stats,
                }
            )
        )

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics: each assigned partition's lag (end offset - committed offset)."""
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        for topic, t in stats.get("topics", {}).items():
            for pid, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                # -1: unknown yet (no committed offset or end offset); "-1": the unassigned placeholder
                if pid != "-1" and lag >= 0 and p.get("fetch_state") not in ("none", "stopped"):
                    metrics.CONSUMER_LAG.labels(topic, pid).set(lag)

    def refresh_routes(self, force: bool = False) -> None:
        """Re-read the registry every ``registry_refresh_s``; the routes stay cached in between.

        A read that fails, or that finds no CDC view where there were some (a registry file caught
        mid-rewrite), keeps the last good routes: events are never skipped for a missing route.
        """
        if not force and time.monotonic() - self._routes_loaded_at < self.config.registry_refresh_s:
            return
        self._routes_loaded_at = time.monotonic()
        try:
            routes = load_routes(self.store)
        except Exception as exc:  # any registry read problem: the cached routes stay in force
            if not self.pipeline.routes:
                raise
            logger.warning("registry refresh failed (%s); keeping the last routes", exc)
            return
        if not routes and self.pipeline.routes:
            logger.warning("the registry lists no CDC feature views now; keeping the last routes")
            return
        if routes != self.pipeline.routes:
            logger.info("routes: %s", {t: [r.view for r in rs] for t, rs in sorted(routes.items())})
            for route in (r for rs in routes.values() for r in rs if r.error):
                logger.error(
                    "feature view %s is not materialised (its rows go to the dead-letter topic): %s",
                    route.view,
                    route.error,
                )
        self.pipeline.routes = routes

    def run(self, stop: threading.Event, ready: Callable[[], None] | None = None) -> None:
        """Process until ``stop`` is set; the last batch is flushed and committed before returning.

        ``ready``, if given, is called once everything is loaded, right before joining the group (it may
        block: streams/workers.py holds workers there until all have loaded)."""
        pattern = self._pattern
        if re.match(pattern, self.settings.dlq_topic):
            # Its own dead letters would come back as input: a loop that never ends.
            raise ConfigError(
                f"dead-letter topic {self.settings.dlq_topic!r} matches the CDC topics' pattern {pattern!r}",
                "set FEATURECTL_DLQ_TOPIC to a name outside the connector's topic.prefix",
            )
        HEALTH.watch(self.settings.max_poll_interval_ms / 1000)  # /healthz, /readyz (core/health.py)
        self.refresh_routes(force=True)
        self._load_models()
        # Everything loaded so far (Feast, Great Expectations, pandas, the model: millions of objects)
        # lives as long as the process. Frozen out of the cyclic GC, they are no longer re-scanned by
        # every full collection the per-batch dicts and rows trigger (measured: ~15% of a batch's time).
        gc.collect()
        gc.freeze()
        # A batch allocates ~20 objects per row that all die with it: a young-generation collection
        # every 700 allocations (the default) scans them ~150 times per 5,000-row batch for nothing.
        gc.set_threshold(50_000, 20, 20)
        if ready is not None:
            ready()
        consumer = self.consumer = self._consumer()
        consumer.subscribe(
            [pattern], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        logger.info(
            "processor: group %s consuming %s from %s",
            self.config.group_id,
            pattern,
            self.settings.bootstrap_servers,
        )
        HEALTH.ready()
        backoff = 0.5
        last_report = time.monotonic()
        try:
            while not stop.is_set():
                HEALTH.beat()
                polled = self._next_batch(consumer)
                self._raise_gaps()  # found while assigning partitions, inside consume()
                if self._gap_accepted:
                    self._tell_gap(consumer)
                for m in polled:
                    err = m.error()
                    if err is not None and err.code() == KafkaError._AUTO_OFFSET_RESET:
                        self._offset_reset(consumer, m)
                messages = [m for m in polled if not _skip_error(m)]
                self.refresh_routes()
                if messages:
                    try:
                        self._handle(consumer, messages)
                        backoff = 0.5
                        metrics.PROCESSOR_WAITING.set(0)
                    except SourceChangedError:
                        logger.critical("stopping: the source database changed under the stores")
                        raise
                    except FeatureCtlError as exc:
                        # Expected and explained (e.g. a model change not yet seen): no traceback.
                        logger.warning(
                            "batch of %d messages not written: %s; re-reading it in %.1fs",
                            len(messages),
                            exc,
                            backoff,
                        )
                        if exc.transient:
                            self._routes_loaded_at = 0.0  # re-read the registry before the retry
                        _waiting(exc)
                        self.pipeline.discard()
                        self._rewind(consumer, messages)
                        stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                    except Exception as exc:
                        if is_transient(exc):  # a store or Kafka away: one line, no traceback
                            logger.warning(
                                "batch of %d messages not written, %s (%s); re-reading it in %.1fs",
                                len(messages),
                                away(exc),
                                describe(exc),
                                backoff,
                            )
                        else:
                            logger.exception(
                                "batch of %d messages failed; re-reading it in %.1fs", len(messages), backoff
                            )
                        _waiting(exc)
                        self.pipeline.discard()
                        self._rewind(consumer, messages)
                        stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                elif self.pipeline.online.transactions_waiting:
                    # Idle, with source transactions read whole but not yet visible: look again, so one whose
                    # END waited past FEATURECTL_TXN_MAX_WAIT_S is released without a new batch to carry it.
                    try:
                        self.pipeline.flush()
                    except Exception as exc:
                        # The next batch's flush looks again; a store away is logged there.
                        logger.debug("idle look at held transactions failed: %s", exc)
                if time.monotonic() - last_report >= self.config.report_every_s:
                    logger.info(
                        "processed %d rows, %d dead letters, %d skipped as older; commit-to-online %s; "
                        "commit-to-batch-end %s",
                        self.processed,
                        self.dead_lettered,
                        self.pipeline.online.skipped_older,
                        self.pipeline.freshness.summary(),
                        self.pipeline.batch_freshness.summary(),
                    )
                    last_report = time.monotonic()
        finally:
            HEALTH.stopping()
            consumer.close()  # leaves the group at once, so the others take over the partitions
            self.pipeline.online.close()
            logger.info("processor stopped after %d rows", self.processed)

    def _next_batch(self, consumer: Consumer) -> list[Message]:
        """What has arrived, up to ``max_batch`` messages, handed on at once.

        Waits only while nothing is there (up to IDLE_S, so ``stop`` is seen), then takes what the client
        has fetched since without waiting; ``linger_s`` (0 by default) bounds an extra wait for more when
        the batch is not full. Under load batches fill by themselves; at low rates a change is not held back.
        Where this copy reads every partition of the connector's topics and the store keeps transactions, a
        batch ends between source transactions where it can (streams/cut.py): one not full is topped up, a
        full one carries its tail into the next batch.
        """
        batch, self._carried = self._carried, []
        batch += consumer.consume(self.config.max_batch - len(batch), 0)
        if not batch:
            batch = list(consumer.consume(1, IDLE_S))
            if not batch:
                return []
            batch += consumer.consume(self.config.max_batch - 1, 0)
        if self.config.linger_s > 0 and len(batch) < self.config.max_batch:
            batch += consumer.consume(self.config.max_batch - len(batch), self.config.linger_s)
        carried_events, self._carried_events = self._carried_events, {}
        self.pipeline.decoded = carried_events
        if not self._sees_whole_transactions(consumer):
            return batch
        if len(batch) < self.config.max_batch:
            return self._top_up(consumer, batch, carried_events)
        tally = Tally(self.pipeline.transaction_topic or "", decoded=carried_events)
        tally.add(batch)
        batch, self._carried = carry(batch, tally.decoded)
        self.pipeline.decoded = tally.decoded
        self._carried_events = {
            w: tally.decoded[w] for m in self._carried if (w := where(m)) in tally.decoded
        }
        return batch

    def _rewind(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        """Read ``messages`` again, and what was carried past them (it follows them in their partitions)."""
        rewind(consumer, [*messages, *self._carried])
        self._carried, self._carried_events = [], {}

    def _top_up(
        self, consumer: Consumer, batch: list[Message], decoded: dict[Where, ChangeEvent]
    ) -> list[Message]:
        """``batch`` with the rest of a source transaction it holds part of, if that arrives within
        TOP_UP_ROUNDS waits of TOP_UP_WAIT_S (streams/cut.py); what it decoded goes to the pipeline."""
        tally = Tally(self.pipeline.transaction_topic or "", decoded=decoded)
        tally.add(batch)
        for _ in range(TOP_UP_ROUNDS):
            if not tally.split or len(batch) >= self.config.max_batch:
                break
            more = consumer.consume(self.config.max_batch - len(batch), TOP_UP_WAIT_S)
            tally.add(more)
            batch += more
        self.pipeline.decoded = tally.decoded
        return batch

    def _sees_whole_transactions(self, consumer: Consumer) -> bool:
        """Whether a batch of this copy can hold whole source transactions: the online store keeps them atomic
        and this copy reads every partition of the connector's topics (alone in its group). Where several copies
        share them, a transaction's changes and END are read by different ones, and no wait here would help."""
        if not (self.settings.atomic_transactions and self.pipeline.online.keeps_transactions):
            return False
        if self._alone is None or time.monotonic() >= self._look_again_at:
            self._look_again_at = math.inf
            try:
                topics = consumer.list_topics(timeout=2).topics
            except KafkaException as exc:
                # Kafka away: batches are cut as they come, and the lookup (which waits) is tried again in a
                # while, not before every batch.
                logger.debug(
                    "no topic metadata (%s): batches are cut as they come for %.0f s", exc, LOOK_AGAIN_S
                )
                self._alone, self._look_again_at = False, time.monotonic() + LOOK_AGAIN_S
                return False
            pattern = re.compile(self._pattern)
            wanted = {(t, p) for t, meta in topics.items() if pattern.match(t) for p in meta.partitions}
            self._alone = wanted <= {(tp.topic, tp.partition) for tp in consumer.assignment()}
        return self._alone

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        starts = partitions
        if partitions:
            try:
                committed = consumer.committed(partitions, timeout=30)
                earliest = [watermarks(consumer, tp)[0] for tp in committed]
                starts, gaps = start_offsets(committed, earliest)
                self._found(gaps)
            except KafkaException as exc:  # a callback must not raise out of consume()
                # Start from the committed offsets; a partition without one (or behind retention) then
                # reports an offset-reset error, checked the same way by _offset_reset.
                logger.warning("checking start offsets failed (%s); starting from the committed ones", exc)
        consumer.incremental_assign(starts)
        self._alone = None
        self.claims.assigned([(p.topic, p.partition) for p in partitions])
        self.assigned.set()

    def _found(self, gaps: list[Gap]) -> None:
        """Retention gaps: logged and read past with ``accept_gaps``, else raised by the loop."""
        if gaps and self.config.accept_gaps:
            # Transactions with changes among the deleted ones never complete: not waited for long.
            self._gap_accepted = True
        for gap in gaps:
            if self.config.accept_gaps:
                logger.warning(
                    "%s (retention deleted them); reading on from offset %d as --accept-gaps asks: "
                    "repair the online store with `featurectl verify --repair`",
                    gap,
                    gap.earliest,
                )
            else:
                logger.error("%s (retention deleted them before this group read them)", gap)
                self._gaps.append(gap)

    def _tell_gap(self, consumer: Consumer) -> None:
        """An accepted retention gap: the online store stops waiting long for transactions from before now."""
        topic = self.pipeline.transaction_topic
        if topic is None:
            return
        try:
            end = watermarks(consumer, TopicPartition(topic, 0), timeout_s=10)[1]
        except KafkaException as exc:  # no transaction topic (a connector without metadata): nothing waits
            logger.info("no end offset of %s (%s): nothing to tell the online store", topic, exc)
            end = -1
        if end > 0:
            self.pipeline.online.accept_gap(end)
        self._gap_accepted = False

    def _raise_gaps(self) -> None:
        if self._gaps:
            raise RetentionGapError(
                "changes were deleted from the CDC topics before the processor read them, so the stores "
                f"would silently miss them: {'; '.join(str(g) for g in self._gaps)}",
                "rebuild what was missed from the source: `featurectl process --accept-gaps` (reads on from "
                "the earliest change still held; the log names every gap), then `featurectl verify --repair "
                "--wait 600` (re-streams wrong or missing entities, deletes gone ones). The offline history "
                "of the gap is lost; `featurectl backfill` records the current state. To prevent it, raise "
                "the topics' retention.ms above the longest processor outage and alert on consumer lag",
            )

    def _offset_reset(self, consumer: Consumer, msg: Message) -> None:
        """A partition's position fell outside what the topic holds (retention overtook a lagging copy)."""
        tp = TopicPartition(msg.topic() or "", msg.partition() or 0)
        (committed,) = consumer.committed([tp], timeout=30)
        low = watermarks(consumer, tp)[0]
        (start,), gaps = start_offsets([committed], [low])
        if not gaps and committed.offset >= low:  # beyond the end: the topic was deleted and recreated
            gaps, start = (
                [Gap(tp.topic, tp.partition, committed.offset, low)],
                TopicPartition(tp.topic, tp.partition, low),
            )
        self._found(gaps)
        self._raise_gaps()
        consumer.seek(start)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._alone = None
        # What was carried of these partitions is their new owner's to read (never committed here).
        gone = {(p.topic, p.partition) for p in partitions}
        self._carried = [m for m in self._carried if (m.topic(), m.partition()) not in gone]
        self._carried_events = {w: e for w, e in self._carried_events.items() if w[:2] not in gone}
        self.claims.revoked([(p.topic, p.partition) for p in partitions])
        for p in partitions:
            # Another copy reports them now. Set to 0, not removed: Feast puts prometheus-client in
            # multiprocess mode, where removing a series is not implemented (sum by topic stays right).
            metrics.CONSUMER_LAG.labels(p.topic, str(p.partition)).set(0)

    def _load_models(self) -> None:
        """Load the declared embedding models before consuming: seconds that no batch should wait for."""
        for routes in self.pipeline.routes.values():
            for route in routes:
                if route.embedding is not None:
                    try:
                        load_embedder(route.embedding)
                    except FeatureCtlError as exc:  # its rows will be dead-lettered with this reason
                        logger.error("feature view %s: %s", route.view, exc)

    def _handle(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        started = time.perf_counter()
        self.pipeline.online.hold(self.claims.for_batch(messages))
        stats, applied = self._write(messages)
        committing = time.perf_counter()
        try:
            consumer.commit(offsets=next_offsets(messages), asynchronous=False)
        except KafkaException as exc:
            # Partitions moved to another copy during the batch: it re-reads from the last commit,
            # and the sinks being idempotent, re-applying this batch there changes nothing.
            logger.warning("offset commit failed (%s); the partitions' new owner re-processes them", exc)
        # Either way this process will not read the batch again (its position is past it).
        self.pipeline.committed()
        done = time.perf_counter()
        metrics.STAGE_DURATION.labels("commit").observe(done - committing)
        metrics.BATCH_DURATION.observe(done - started)
        metrics.BATCH_MESSAGES.observe(len(messages))
        self.processed += stats.rows
        self.dead_lettered += stats.dead_letters
        logger.debug(
            "batch: %d messages, %d rows, %d online, %d dead letters, %d skipped",
            stats.messages,
            stats.rows,
            applied,
            stats.dead_letters,
            stats.skipped,
        )

    def _write(self, messages: Sequence[Message]) -> tuple[BatchStats, int]:
        """Process and flush ``messages``; a poison record is isolated and dead-lettered (streams/isolate.py)."""
        return write_isolating(self.pipeline, messages, self.pipeline.process)


def _skip_error(msg: Message) -> bool:
    err = msg.error()
    if err is None:
        return False
    if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
        return True
    logger.warning("kafka: %s", err)
    return True


def _waiting(exc: BaseException) -> None:
    """A batch is being re-read: the gauge says the processor waits, the counter why."""
    metrics.PROCESSOR_WAITING.set(1)
    metrics.BATCH_RETRIES.labels(type(exc).__name__).inc()
