"""``featurectl health``: the one screen an operator reads first.

Each check answers one question and says what to do when the answer is bad:
  postgres, kafka      reachable with the platform's credentials?
  online store         is the online store answering (the processor waits while it does not)?
  connector            RUNNING, with every task RUNNING?
  slot                 present, not lost, retaining less WAL than the limit (monitoring/watch.py)?
  lag                  how far the processor's group is behind the CDC topics, and is anyone consuming?
  capture <table>      does each CDC view's table reach Kafka: captured, published (through the
                       partition root when partitioned), not a leaf partition, no feature on a generated
                       column, and a topic once it has rows (connectors/capture.py)?
  snapshot <table>     did the latest incremental snapshot of each CDC view's table complete, or was it
                       skipped, stopped or stalled (rows not all re-streamed: jobs/snapshot.py)?
  view <name>          when the last change of each CDC view reached its history
  dead letters         how many records were dead-lettered in the last hour
  job <name>           did each job's last run succeed?
  drift <view>         did the last `featurectl drift` find features moved from their reference?
``fail`` means something needs action now (the command exits 1); ``warn`` means look soon.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from feast import FeatureStore
from psycopg import sql

from connectors.capture import CaptureProblem, capture_problems
from connectors.definition import ConnectorDefinition
from connectors.deploy import debezium_conninfo
from connectors.status import connector_status, slot_status
from core.errors import FeatureCtlError
from core.settings import Settings
from jobs.snapshot import last_snapshots
from monitoring.drift.report import load_last
from monitoring.job_runs import last_runs
from monitoring.watch import wal_limit, wal_problem
from stores.history.probe import probe as probe_history
from stores.history.reader import History
from stores.registry import probe as probe_online_store
from stores.registry import transaction_state
from stores.transactions import State
from streams.routes import route_for, source_columns, source_keys

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail
    summary: str
    action: str | None = None  # what to do, when status is not ok
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Health:
    checks: list[Check]

    @property
    def needs_action(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def as_json(self) -> dict[str, Any]:
        return {"ok": not self.needs_action, "checks": [asdict(c) for c in self.checks]}


def _guard(name: str, probe: Callable[[], list[Check]]) -> list[Check]:
    """A probe that raised (a service down, a wrong password) is a failed check naming the error."""
    try:
        return probe()
    except FeatureCtlError as exc:
        return [Check(name, FAIL, exc.problem, exc.fix)]
    except (psycopg.Error, KafkaException, OSError) as exc:
        return [Check(name, FAIL, f"{type(exc).__name__}: {str(exc).strip()[:300]}", "see the service's log")]


class HealthCheck:
    """Runs every check once; nothing is changed anywhere."""

    def __init__(
        self,
        settings: Settings,
        definition: ConnectorDefinition,
        views: list[tuple[str, Callable[[], datetime | None]]],
        app_conninfo: str,
        lag_alert: int = 10_000,
        sources: dict[str, set[str]] | None = None,
        keys: dict[str, set[str]] | None = None,
        snapshot_stall_s: float = 900,
        online: Callable[[], str] | None = None,
        history: Callable[[], str] | None = None,
        transactions: Callable[[], State | None] | None = None,
    ) -> None:
        self.settings = settings
        self.snapshot_stall_s = snapshot_stall_s  # a running snapshot silent this long is stalled
        self.definition = definition
        self.views = views  # (view name, its history's last change time)
        self.sources = sources or {}  # captured table -> the columns its views read
        self.keys = keys or {}  # captured table -> the columns of its views' join keys
        self.app_conninfo = app_conninfo
        self.lag_alert = lag_alert
        self._consumer: Consumer | None = None
        self.online = online  # probes the online store: where it answered, or raises its driver's error
        self.history = history  # probes the history's storage: how many tables took a write, or raises
        self.transactions = (
            transactions  # the online store's held source transactions (stores/transactions.py)
        )

    @classmethod
    def for_repository(
        cls, settings: Settings, store: FeatureStore, definition: ConnectorDefinition, app_conninfo: str
    ) -> HealthCheck:
        """The checks of a Feast repository: every CDC view's history, every captured table's columns."""
        views = [
            (view.name, History(store, view).last_change)
            for view in store.list_feature_views()
            if view.tags.get("cdc.table")
        ]
        routes = [r for r in (route_for(v) for v in store.list_feature_views()) if r is not None]
        return cls(
            settings,
            definition,
            views,
            app_conninfo,
            sources=source_columns(routes),
            keys=source_keys(routes),
            online=lambda: probe_online_store(store),
            history=lambda: probe_history(store),
            transactions=lambda: transaction_state(store),
        )

    def run(self) -> Health:
        checks: list[Check] = []
        for name, probe in (
            ("postgres", self._postgres),
            ("kafka", self._kafka),
            ("online store", self._online),
            ("offline history", self._history),
            ("transactions", self._transactions),
            ("connector", self._connector),
            ("slot", self._slot),
            ("lag", self._lag),
            ("capture", self._capture),
            ("snapshots", self._snapshots),
            ("views", self._views),
            ("dead letters", self._dead_letters),
            ("jobs", self._jobs),
            ("drift", self._drift),
            ("consistency", self._consistency),
        ):
            checks += _guard(name, probe)
        if self._consumer is not None:
            self._consumer.close()
        return Health(checks)

    # --- services ----------------------------------------------------------------------------------
    def _postgres(self) -> list[Check]:
        s = self.settings
        with psycopg.connect(self.app_conninfo) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        return [
            Check(
                "postgres",
                OK,
                f"{s.pg_host}:{s.pg_port}/{s.pg_database} (PostgreSQL {version and version[0]})",
            )
        ]

    def _online(self) -> list[Check]:
        if self.online is None:
            return []
        try:
            return [Check("online store", OK, self.online())]
        except FeatureCtlError:
            raise
        except Exception as exc:  # any driver's error: redis-py's and pymilvus's are not OSError
            return [
                Check(
                    "online store",
                    FAIL,
                    f"not answering: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                    "start it (locally: featurectl stack up --with online-postgres, redis or milvus) or fix "
                    "online_store in feature_store.yaml; the processor waits for it meanwhile",
                )
            ]

    def _transactions(self) -> list[Check]:
        """Source transactions held for atomic visibility: waiting too long, or made visible without it."""
        if self.transactions is None:
            return []
        try:
            held = self.transactions()
        except Exception as exc:  # any driver's error: the online store's own check says what is wrong
            return [
                Check(
                    "transactions",
                    WARN,
                    f"not read: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                )
            ]
        if held is None:
            return []
        data = asdict(held)
        waiting = f"{held.waiting} waiting for the rest of their changes" + (
            f" (oldest {_ago(held.oldest_s)})" if held.oldest_s is not None else ""
        )
        if held.partial:
            return [
                Check(
                    "transactions",
                    WARN,
                    f"{held.partial} source transaction(s) were made visible without atomicity (larger than "
                    f"FEATURECTL_TXN_MAX_ROWS, or their changes did not all arrive within FEATURECTL_TXN_MAX_WAIT_S); "
                    f"{waiting}",
                    "see the processor's log ('made visible without atomicity'); raise the limit if readers "
                    "need such transactions whole",
                    data,
                )
            ]
        if held.oldest_s is not None and held.oldest_s > 60:
            return [
                Check(
                    "transactions",
                    WARN,
                    f"{waiting}, {held.held_rows:,} rows held out of sight",
                    "a processor is behind or stopped (see lag); past FEATURECTL_TXN_MAX_WAIT_S they are "
                    "made visible with what arrived",
                    data,
                )
            ]
        return [Check("transactions", OK, f"whole for readers; {waiting}", data=data)]

    def _history(self) -> list[Check]:
        if self.history is None:
            return []
        try:
            return [Check("offline history", OK, self.history())]
        except OSError as exc:
            return [
                Check(
                    "offline history",
                    FAIL,
                    f"cannot be written: {exc.strerror} ({exc.filename})",
                    "free space on its disk or make the directory writable again; the processor waits "
                    "meanwhile and writes the held batches when it can",
                )
            ]

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                self.settings.kafka_client(
                    **{"group.id": self.settings.processor_group, "enable.auto.commit": False}
                )
            )
        return self._consumer

    def _kafka(self) -> list[Check]:
        meta = AdminClient(self.settings.kafka_client()).list_topics(timeout=10)
        return [Check("kafka", OK, f"{self.settings.bootstrap_servers}: {len(meta.brokers)} broker(s)")]

    def _connector(self) -> list[Check]:
        st = connector_status(self.settings.connect_rest_url, self.definition.name)
        data = {"state": st.state, "tasks": st.tasks}
        if st.running:
            return [Check("connector", OK, f"{st.name} RUNNING, {len(st.tasks)} task(s) RUNNING", data=data)]
        tasks = ", ".join(f"task {t} {s}" for t, s in sorted(st.tasks.items())) or "no tasks"
        action = {
            "MISSING": "deploy it: `featurectl connector deploy`",
            "PAUSED": "resume it: `featurectl connector resume` (its slot retains WAL while it is paused)",
            "STOPPED": "resume it: `featurectl connector resume`",
            "FAILED": "read the trace, fix the cause, then `featurectl connector restart`",
        }.get(st.state, "tasks not running: `featurectl connector restart`, then read the Connect log")
        summary = f"connector {st.name} is {st.state} ({tasks})"
        if st.trace:
            summary += f": {st.trace.splitlines()[0][:200]}"
        return [Check("connector", FAIL, summary, action, data)]

    def _slot(self) -> list[Check]:
        slot = slot_status(debezium_conninfo(self.settings), self.definition.slot_name)
        if slot is None:
            return [
                Check(
                    "slot",
                    FAIL,
                    f"replication slot {self.definition.slot_name} does not exist",
                    "deploy the connector (it creates the slot): `featurectl connector deploy`",
                )
            ]
        limit = wal_limit(slot, self.settings.wal_retained_alert_bytes)
        data = {
            "retained_wal_bytes": slot.retained_wal_bytes,
            "limit_bytes": limit,
            "active": slot.active,
            "wal_status": slot.wal_status,
            "confirmed_flush_lag_bytes": slot.flush_lag_bytes,
        }
        summary = (
            f"{slot.name}: {'active' if slot.active else 'inactive'}, retains "
            f"{slot.retained_wal_bytes / 2**20:,.1f} MiB of WAL (limit {limit / 2**20:,.0f} MiB)"
        )
        problem = wal_problem(slot, self.settings.wal_retained_alert_bytes)
        if problem:
            fix = (
                "re-deploy the connector; it snapshots again"
                if slot.wal_status == "lost"
                else "get the connector consuming again (`featurectl connector resume|restart`); if it is gone "
                "for good, `featurectl connector delete` drops the slot"
            )
            return [Check("slot", FAIL, problem, fix, data)]
        if not slot.active:
            return [
                Check(
                    "slot",
                    WARN,
                    summary,
                    "no consumer is connected: WAL accumulates until the connector reads again",
                    data,
                )
            ]
        return [Check("slot", OK, summary, data=data)]

    # --- the processor ---------------------------------------------------------------------------
    def _cdc_partitions(self) -> list[TopicPartition]:
        prefix = self.definition.topic_prefix + "."
        meta = self._client().list_topics(timeout=10)
        return [
            TopicPartition(name, p)
            for name, topic in sorted(meta.topics.items())
            if name.startswith(prefix)
            for p in sorted(topic.partitions)
        ]

    def _lag(self) -> list[Check]:
        consumer = self._client()
        partitions = self._cdc_partitions()
        committed = consumer.committed(partitions, timeout=10) if partitions else []
        per_topic: dict[str, int] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            start = tp.offset if tp.offset >= 0 else low
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - start)
        total = sum(per_topic.values())
        members = self._group_members()
        data = {"group": self.settings.processor_group, "lag": per_topic, "members": members}
        summary = f"group {self.settings.processor_group}: {total:,} message(s) behind, {members} member(s)"
        if total and members == 0:
            return [
                Check(
                    "lag", FAIL, summary + ": no processor is running", "start it: `featurectl process`", data
                )
            ]
        if total > self.lag_alert:
            return [
                Check(
                    "lag",
                    WARN,
                    summary,
                    "the processor falls behind: run more copies (`featurectl process`, same group) or "
                    "see its batch and stage durations (/metrics)",
                    data,
                )
            ]
        return [Check("lag", OK, summary, data=data)]

    def _group_members(self) -> int:
        admin = AdminClient(self.settings.kafka_client())
        group = self.settings.processor_group
        described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        return len(described.members)

    def _capture(self) -> list[Check]:
        if not self.sources:
            return []
        meta = AdminClient(self.settings.kafka_client()).list_topics(timeout=10)
        out = []
        with psycopg.connect(self.app_conninfo) as conn:
            problems = capture_problems(conn, self.definition, self.sources, self.keys)
            for table in sorted(self.sources):
                mine = [p for p in problems if p.table == table]
                topic = self.definition.topic_for(table)
                if not mine and topic not in meta.topics and _has_rows(conn, table):
                    mine.append(
                        CaptureProblem(
                            table,
                            f"{table} has rows but no topic {topic}: Debezium has published none of its changes",
                            f"check `featurectl connector status` and the Connect log, then `featurectl snapshot "
                            f"{table}`",
                        )
                    )
                if mine:
                    out += [Check(f"capture {table}", FAIL, p.problem, p.fix) for p in mine]
                else:
                    out.append(Check(f"capture {table}", OK, f"captured and published ({topic})"))
        return out

    def _snapshots(self) -> list[Check]:
        topic = self.definition.config.get("notification.sink.topic.name")
        if not self.sources or not topic:
            return []
        outcomes = last_snapshots(self.settings.kafka_client(), topic)
        out = []
        now_ms = time.time() * 1000
        for table in sorted(self.sources):
            snap = outcomes.get(table)
            if snap is None:
                continue
            silent_s = (now_ms - snap.last_note_ms) / 1000
            what = f"incremental snapshot {snap.signal_id}"
            data = {"signal_id": snap.signal_id, "state": snap.state, "silent_seconds": round(silent_s)}
            redo = f"`featurectl snapshot {table} --wait 3600`"
            if snap.state == "completed":
                out.append(Check(f"snapshot {table}", OK, f"{what} completed ({snap.detail})", data=data))
            elif snap.state in ("skipped", "stopped"):
                out.append(
                    Check(
                        f"snapshot {table}",
                        FAIL,
                        f"{what} was {snap.state}: {snap.detail}; the table's rows were not all re-streamed",
                        f"fix what the Connect log names for {table} (`featurectl health` capture checks), "
                        f"then {redo}",
                        data,
                    )
                )
            elif snap.state == "paused":
                out.append(
                    Check(
                        f"snapshot {table}",
                        WARN,
                        f"{what} is paused",
                        "resume it with a resume-snapshot signal",
                        data,
                    )
                )
            elif silent_s > self.snapshot_stall_s:
                out.append(
                    Check(
                        f"snapshot {table}",
                        FAIL,
                        f"{what} is stalled: no progress from Debezium for {_ago(silent_s)}",
                        f"`featurectl connector restart` (read the Connect log first), then {redo}",
                        data,
                    )
                )
            else:
                out.append(Check(f"snapshot {table}", OK, f"{what} running", data=data))
        return out

    def _views(self) -> list[Check]:
        now = datetime.now(UTC)
        out = []
        for name, last_change in self.views:
            when = last_change()
            if when is None:
                out.append(Check(f"view {name}", OK, "no history yet", data={"last_change": None}))
                continue
            age = (now - when).total_seconds()
            out.append(
                Check(
                    f"view {name}",
                    OK,
                    f"last change {when:%Y-%m-%d %H:%M:%S}Z ({_ago(age)} ago)",
                    data={"last_change": when.isoformat(), "age_seconds": round(age, 1)},
                )
            )
        return out

    def _dead_letters(self) -> list[Check]:
        consumer = self._client()
        topic = self.settings.dlq_topic
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return [Check("dead letters", OK, f"{topic}: none yet", data={"last_hour": 0})]
        hour_ago_ms = int((time.time() - 3600) * 1000)
        tps = [TopicPartition(topic, p, hour_ago_ms) for p in meta.topics[topic].partitions]
        count = 0
        for tp in consumer.offsets_for_times(tps, timeout=10):
            high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10, cached=False
            )[1]
            count += 0 if tp.offset < 0 else high - tp.offset  # -1: nothing that recent
        data = {"last_hour": count}
        if count:
            return [
                Check(
                    "dead letters",
                    WARN,
                    f"{count} record(s) dead-lettered in the last hour",
                    "read them: `featurectl dlq list`; fix the data or the suite, then `featurectl dlq replay`",
                    data,
                )
            ]
        return [Check("dead letters", OK, "none in the last hour", data=data)]

    def _drift(self) -> list[Check]:
        """Views whose last drift check (`featurectl drift`) found features moved: warn (look soon)."""
        out = []
        for view, last in sorted(load_last(self.settings.data_dir).items()):
            checked = datetime.fromtimestamp(float(last["checked_at"]), UTC)
            drifting = list(last.get("drifting") or [])
            data = {"drifting": drifting, "checked_at": checked.isoformat()}
            if drifting:
                out.append(
                    Check(
                        f"drift {view}",
                        WARN,
                        f"{', '.join(drifting)} drifted from the reference (checked {checked:%Y-%m-%d %H:%M:%S}Z)",
                        f"see `featurectl drift {view} --html report.html`; retrain, or move the reference",
                        data,
                    )
                )
            else:
                out.append(
                    Check(f"drift {view}", OK, f"no drift (checked {checked:%Y-%m-%d %H:%M:%S}Z)", data=data)
                )
        return out

    def _consistency(self) -> list[Check]:
        """Feature services whose last consistency check (`featurectl consistency`) found served values the
        history never held: fail (models are served what they were not trained on)."""
        from monitoring.consistency import load_last as last_consistency

        out = []
        for service, last in sorted(last_consistency(self.settings.data_dir).items()):
            checked = datetime.fromtimestamp(float(last["checked_at"]), UTC)
            skew = dict(last.get("skew") or {})
            data = {"skew": skew, "rows": last.get("rows"), "checked_at": checked.isoformat()}
            when = f"checked {checked:%Y-%m-%d %H:%M:%S}Z"
            if skew:
                out.append(
                    Check(
                        f"consistency {service}",
                        FAIL,
                        f"served values the history never held: {', '.join(f'{f} ({n})' for f, n in skew.items())} "
                        f"({when})",
                        f"`featurectl consistency {service}` lists examples: find what wrote them online",
                        data,
                    )
                )
            else:
                out.append(
                    Check(
                        f"consistency {service}",
                        OK,
                        f"served = history over {last.get('rows', 0)} row(s), "
                        f"{last.get('lag', 0)} value(s) explained by freshness lag ({when})",
                        data=data,
                    )
                )
        return out

    def _jobs(self) -> list[Check]:
        runs = last_runs(self.settings.data_dir)
        if not runs:
            return [Check("jobs", OK, "no job has run here yet")]
        out = []
        for job, entry in sorted(runs.items()):
            last = entry["last"]
            ended = datetime.fromtimestamp(last.ended, UTC)
            data = {"outcome": last.outcome, "ended": ended.isoformat(), "error": last.error}
            if last.outcome == "success":
                out.append(Check(f"job {job}", OK, f"succeeded {ended:%Y-%m-%d %H:%M:%S}Z", data=data))
            else:
                out.append(
                    Check(
                        f"job {job}",
                        FAIL,
                        f"failed {ended:%Y-%m-%d %H:%M:%S}Z: {last.error}",
                        f"fix what the error names and run `featurectl {job.split('-', 1)[0]}` again",
                        data,
                    )
                )
        return out


def _has_rows(conn: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    schema, name = table.split(".", 1)
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, name))
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
