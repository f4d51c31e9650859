"""Training equals serving, checked on served traffic (``featurectl consistency``).

For each logged lookup of a feature service (stores/history/served.py) in the window, the features are computed
again from the offline history **as of the request's time**, by Feast's own point-in-time join: the very path
a training set is built by. Per feature, each served value is then:

- **matched**: equal (numbers within a relative error of ``REL_TOL``; both absent counts as equal: a key
  not found online and no state offline, a delete, a value past its ttl);
- **missing online**: served absent (NOT_FOUND, OUTSIDE_MAX_AGE, null) where the history has a value;
- **missing offline**: served a value the history does not have as of then;
- **different**: both present, unequal (numbers: the largest relative error is reported).

A difference is **freshness lag**, not skew, when the served value is what the history held a little earlier:
the online store reflects a change only once the processor wrote it, ``lag`` after its commit. ``lag`` is
measured from the history itself, the largest ``ingested_at - event_timestamp`` of the service's views over
the window (plus ``LAG_MARGIN_S`` for the online write that follows the stamp), unless given. Every served
value that is not matched is compared with the history as of ``request - lag`` and with each state the entity
passed through between then and the request: equal to one of them, it is lag; else it is **real skew**, a
value that training would never have seen. Real skew is listed with examples and makes the command fail.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore

from core.errors import ConfigError

logger = logging.getLogger(__name__)

REL_TOL = 1e-9  # sums of floats added in another order (aggregations) differ in the last bits
LAG_MARGIN_S = 1.0
ABSENT = {3, 4}  # Feast's FieldStatus NOT_FOUND, OUTSIDE_MAX_AGE
EXAMPLES = 5


@dataclass
class FeatureConsistency:
    """One feature's counts over the compared lookups (entity rows)."""

    feature: str
    compared: int = 0
    matched: int = 0
    missing_online: int = 0
    missing_offline: int = 0
    different: int = 0
    lag: int = 0  # of the three above, explained by freshness lag
    skew: int = 0  # of the three above, real skew
    max_rel_error: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "SKEW" if self.skew else "ok"


@dataclass
class ConsistencyReport:
    service: str
    start: str
    end: str
    requests: int
    rows: int
    lag_s: float
    features: list[FeatureConsistency]
    # Per compared row: its request time (s since the epoch) and, per feature, "matched", "lag" or "skew";
    # and per feature the (served, offline) pairs of numbers that did not match: for the page (--html).
    times: list[float] = field(default_factory=list, repr=False)
    outcomes: dict[str, list[str]] = field(default_factory=dict, repr=False)
    pairs: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict, repr=False)

    @property
    def skew(self) -> int:
        return sum(f.skew for f in self.features)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self) | {"skew": self.skew}
        for name in ("times", "outcomes", "pairs"):
            out.pop(name)
        return out


def _same(served: Any, offline: Any) -> tuple[bool, float | None]:
    """Whether a served value equals the offline one, and their relative error when both are numbers."""
    served, offline = _scalar(served), _scalar(offline)
    if _absent(served) and _absent(offline):
        return True, None
    if _absent(served) or _absent(offline):
        return False, None
    if isinstance(served, bool) or isinstance(offline, bool):
        return bool(served) == bool(offline) and type(served) is type(offline), None
    if isinstance(served, (int, float)) and isinstance(offline, (int, float)):
        a, b = float(served), float(offline)
        if a == b or (math.isnan(a) and math.isnan(b)):
            return True, 0.0
        scale = max(abs(a), abs(b))
        error = abs(a - b) / scale if scale and math.isfinite(scale) else math.inf
        return error <= REL_TOL, error
    if hasattr(served, "tolist"):
        served = served.tolist()
    if hasattr(offline, "tolist"):
        offline = offline.tolist()
    if isinstance(served, pd.Timestamp):
        served = served.to_pydatetime()
    if isinstance(offline, pd.Timestamp):
        offline = offline.to_pydatetime()
    return served == offline, None


def _scalar(value: Any) -> Any:
    """A numpy scalar as its Python value (a column with nulls holds Python values, one without numpy's)."""
    import numpy as np

    if isinstance(value, np.generic) and not isinstance(value, (np.datetime64, np.timedelta64)):
        return value.item()
    return value


def _absent(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value)) if not hasattr(value, "__len__") else False
    except (TypeError, ValueError):
        return False


def _sampled(logs: pa.Table, fraction: float) -> pa.Table:
    """Whole requests, picked by a hash of their id (the same requests every run)."""
    if fraction >= 1.0:
        return logs
    ids = logs.column("__request_id").to_pylist()
    keep = [zlib.crc32(i.encode()) % 1_000_000 < fraction * 1_000_000 for i in ids]
    return logs.filter(pa.array(keep))


def measured_lag(store: FeatureStore, views: list[Any], start: datetime, end: datetime) -> float:
    """The largest commit-to-store delay (``ingested_at - event_timestamp``) of the views' changes in
    [start - 1 h, end], in seconds (0 without changes)."""
    import pyarrow.dataset as ds

    from stores.history.reader import History

    worst = 0.0
    for view in views:
        history = History(store, view)
        files = history.files()
        if not files:
            continue
        rows = history.dataset(files).to_table(
            columns=["event_timestamp", "ingested_at"],
            filter=(
                ds.field("event_timestamp")
                >= pa.scalar(start - timedelta(hours=1), pa.timestamp("us", "UTC"))
            )
            & (ds.field("event_timestamp") <= pa.scalar(end, pa.timestamp("us", "UTC"))),
        )
        if rows.num_rows:
            delays = pc.subtract(rows.column("ingested_at"), rows.column("event_timestamp"))
            longest = pc.max(pc.cast(delays, pa.int64())).as_py()  # microseconds
            if longest is not None:
                worst = max(worst, longest / 1e6)
    return worst


def check(
    store: FeatureStore,
    service_name: str,
    start: datetime,
    end: datetime,
    sample: float = 1.0,
    lag_s: float | None = None,
) -> ConsistencyReport:
    """Compare the service's logged lookups in [start, end) with the history (module docstring)."""
    from stores.history import served

    try:
        service = store.get_feature_service(service_name)
    except Exception:
        names = sorted(s.name for s in store.list_feature_services() if s.logging_config is not None)
        raise ConfigError(
            f"no feature service named {service_name}",
            f"pick a logged one: {', '.join(names) or 'none has a logging_config'}",
        ) from None
    if service.logging_config is None:
        raise ConfigError(
            f"feature service {service_name} is not logged",
            "give it logging_config=LoggingConfig(destination=FileLoggingDestination(path=...)), `feast apply`, "
            "and serve it with `featurectl serve`",
        )
    refs, columns, views = [], [], []
    for projection in service.feature_view_projections:
        views.append(store.get_feature_view(projection.name))
        prefix: str = projection.name_to_use()  # type: ignore[no-untyped-call]
        for feature in projection.features:
            refs.append(f"{prefix}:{feature.name}")
            columns.append(f"{prefix}__{feature.name}")
    logs = _sampled(served.read(served.log_path(service, store.config.repo_path), start, end), sample)
    report = ConsistencyReport(
        service_name, start.isoformat(), end.isoformat(), 0, logs.num_rows, 0.0,
        [FeatureConsistency(c) for c in columns],
    )  # fmt: skip
    if logs.num_rows == 0:
        return report
    report.requests = len(set(logs.column("__request_id").to_pylist()))
    lag = measured_lag(store, views, start, end) + LAG_MARGIN_S if lag_s is None else lag_s
    report.lag_s = round(lag, 3)
    keys = [
        n
        for n in logs.column_names
        if not n.startswith("__") and not any(n == c or n.startswith(c + "__") for c in columns)
    ]
    frame = logs.to_pandas(types_mapper=None, timestamp_as_object=False)
    frame["__row"] = range(len(frame))
    at = pd.to_datetime(frame["__log_timestamp"], utc=True)
    now = _offline(store, frame, keys, at, refs)
    before = _offline(
        store, frame, keys, at - pd.Timedelta(microseconds=int(lag * 1e6)), refs
    )  # µs: as stored
    pending: dict[str, list[int]] = {}  # feature -> rows neither the state at R nor at R - lag explain
    report.times = [t.timestamp() for t in at]
    for result in report.features:
        name = result.feature
        outcome = report.outcomes.setdefault(name, ["matched"] * len(frame))
        served_values = frame[name].tolist()
        statuses = frame[f"{name}__status"].tolist()
        for row in range(len(frame)):
            value = None if statuses[row] in ABSENT else served_values[row]
            offline = now[name].iloc[row]
            result.compared += 1
            equal, error = _same(value, offline)
            if equal:
                result.matched += 1
                continue
            if _absent(value):
                result.missing_online += 1
            elif _absent(offline):
                result.missing_offline += 1
            else:
                result.different += 1
                if error is not None:
                    result.max_rel_error = max(result.max_rel_error or 0.0, error)
            if _same(value, before[name].iloc[row])[0]:
                result.lag += 1
                outcome[row] = "lag"
            else:
                pending.setdefault(name, []).append(row)
    passed = _passed_through(store, service, frame, keys, at, lag, pending)
    for result in report.features:
        statuses = frame[f"{result.feature}__status"].tolist()
        for row in pending.get(result.feature, []):
            if (result.feature, row) in passed:
                result.lag += 1
                report.outcomes[result.feature][row] = "lag"
                continue
            value = None if statuses[row] in ABSENT else frame[result.feature].iloc[row]
            result.skew += 1
            report.outcomes[result.feature][row] = "skew"
            if len(result.examples) < EXAMPLES:
                result.examples.append(
                    {
                        **{k: _plain(frame[k].iloc[row]) for k in keys},
                        "request_time": at.iloc[row].isoformat(),
                        "served": _plain(value),
                        "status": int(statuses[row]),
                        "offline": _plain(now[result.feature].iloc[row]),
                        "offline_lag_ago": _plain(before[result.feature].iloc[row]),
                    }
                )
    for result in report.features:  # numbers that did not match, for the page's scatter
        served_values, offline_values = frame[result.feature].tolist(), now[result.feature].tolist()
        for row, verdict in enumerate(report.outcomes.get(result.feature, [])):
            a, b = served_values[row], offline_values[row]
            if verdict != "matched" and _number(a) and _number(b):
                report.pairs.setdefault(result.feature, []).append((float(a), float(b), verdict))
    for result in report.features:
        if result.skew:
            logger.warning(
                "consistency %s: %s served %d value(s) the history never held then (e.g. %s)",
                service_name, result.feature, result.skew, result.examples[:1],
            )  # fmt: skip
    return report


def _passed_through(
    store: FeatureStore,
    service: Any,
    frame: pd.DataFrame,
    keys: list[str],
    at: pd.Series,
    lag: float,
    pending: dict[str, list[int]],
) -> set[tuple[str, int]]:
    """Of the ``pending`` (feature, row) pairs, those whose served value is a state the entity passed through
    between ``request - lag`` and the request (a change after another within the lag: the online store may have
    held the first when the request came). A plain view's states are its history rows; an aggregation view's are
    its value at the request with the changes committed by each instant of that interval (its windows slide at
    read time, whatever the store has applied)."""
    import pyarrow.dataset as ds

    from aggregations.spec import is_aggregation_view
    from stores.history.reader import History

    found: set[tuple[str, int]] = set()
    for projection in service.feature_view_projections:
        prefix: str = projection.name_to_use()
        features = {f.name: f"{prefix}__{f.name}" for f in projection.features}
        rows = sorted({r for c in features.values() for r in pending.get(c, [])})
        view = store.get_feature_view(projection.name)
        if not rows:
            continue
        history = History(store, view)
        files = history.files()
        if not files:
            continue
        join_map = projection.join_key_map or {}
        columns = {c.name: join_map.get(c.name, c.name) for c in view.entity_columns}
        if not set(columns.values()) <= set(keys):
            continue
        lo = (at.iloc[rows].min() - pd.Timedelta(seconds=lag)).to_pydatetime()
        hi = at.iloc[rows].max().to_pydatetime()
        stamp = pa.timestamp("us", "UTC")
        where = (ds.field("event_timestamp") >= pa.scalar(lo, stamp)) & (
            ds.field("event_timestamp") <= pa.scalar(hi, stamp)
        )
        for column, key in columns.items():
            where = where & ds.field(column).isin(pa.array(frame[key].iloc[rows].unique().tolist()))
        states = history.dataset(files).to_table(filter=where).to_pandas()
        if is_aggregation_view(view):
            found |= _aggregated_states(
                view, history, files, frame, at, lag, rows, columns, features, pending
            )
            continue
        for row in rows:
            match = states
            for column, key in columns.items():
                match = match[match[column] == frame[key].iloc[row]]
            r = at.iloc[row]
            match = match[
                (match["event_timestamp"] > r - pd.Timedelta(seconds=lag)) & (match["event_timestamp"] <= r)
            ]
            for feature, name in features.items():
                if row not in pending.get(name, []) or feature not in match.columns:
                    continue
                status = frame[f"{name}__status"].iloc[row]
                value = None if status in ABSENT else frame[name].iloc[row]
                deleted = match["cdc_deleted"].fillna(False).tolist()
                if any(
                    _same(value, None if gone else state)[0]
                    for state, gone in zip(match[feature].tolist(), deleted, strict=True)
                ):
                    found.add((name, row))
    return found


def _aggregated_states(
    view: Any,
    history: Any,
    files: list[str],
    frame: pd.DataFrame,
    at: pd.Series,
    lag: float,
    rows: list[int],
    columns: dict[str, str],
    features: dict[str, str],
    pending: dict[str, list[int]],
) -> set[tuple[str, int]]:
    """Of an aggregation view's pending rows, those whose served value is the view's value at the request over
    the changes committed by ``request - lag`` or by any commit of the view between then and the request (of any
    key: a change moving an order away from a customer is a row of the other customer)."""
    import bisect

    import duckdb
    import pyarrow.dataset as ds

    from aggregations.offline import values_at
    from aggregations.rows import outward
    from aggregations.spec import aggregation_view
    from stores.history.aggregations import history_relation

    spec = aggregation_view(view)
    assert spec is not None
    (key,) = columns.values()  # an aggregation view has one join key
    stamp = pa.timestamp("us", "UTC")
    lo = (at.iloc[rows].min() - pd.Timedelta(seconds=lag)).to_pydatetime()
    hi = at.iloc[rows].max().to_pydatetime()
    committed = history.dataset(files).to_table(
        columns=["event_timestamp"],
        filter=(ds.field("event_timestamp") > pa.scalar(lo, stamp))
        & (ds.field("event_timestamp") <= pa.scalar(hi, stamp)),
    )
    commits = sorted(set(pd.to_datetime(committed.column("event_timestamp").to_pandas(), utc=True)))
    labels, owners = [], []
    for row in rows:
        r = at.iloc[row]
        since = r - pd.Timedelta(seconds=lag)
        cuts = [since, *commits[bisect.bisect_right(commits, since) : bisect.bisect_right(commits, r)]]
        for cut in cuts:
            labels.append((frame[key].iloc[row], r.to_pydatetime(), cut.to_pydatetime()))
            owners.append(row)
    aggs = [a for a in spec.aggregations if a.name in features]
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # stdout may be --json: no bar printed on it
    try:
        values = values_at(con, history_relation(con, view, spec, files), labels, aggs)
    finally:
        con.close()
    found: set[tuple[str, int]] = set()
    for row, value in zip(owners, values, strict=True):
        for agg in aggs:
            name = features[agg.name]
            if row not in pending.get(name, []) or (name, row) in found:
                continue
            status = frame[f"{name}__status"].iloc[row]
            served = None if status in ABSENT else frame[name].iloc[row]
            if _same(served, outward(value[agg.name]))[0]:
                found.add((name, row))
    return found


def _offline(
    store: FeatureStore, frame: pd.DataFrame, keys: list[str], at: pd.Series, refs: list[str]
) -> pd.DataFrame:
    """The features as of ``at`` for each logged row, by Feast's point-in-time join; row order as ``frame``."""
    entities = frame[keys].copy()
    entities["event_timestamp"] = at
    entities["__row"] = frame["__row"].values
    got = store.get_historical_features(entity_df=entities, features=refs, full_feature_names=True).to_df()
    return got.sort_values("__row").set_index("__row").reindex(frame["__row"].values)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a cell."""
    if _absent(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


def as_table(report: ConsistencyReport) -> list[str]:
    """The human table: per feature the counts, the worst relative error, the verdict."""
    lines = [
        f"consistency of {report.service}: {report.requests} lookup(s), {report.rows} entity row(s) served "
        f"{report.start} .. {report.end}, recomputed as of each request (freshness lag {report.lag_s:.2f} s)",
        f"  {'feature':<34} {'compared':>8} {'matched':>8} {'miss.onl':>8} {'miss.off':>8} {'differ':>7} "
        f"{'lag':>6} {'skew':>6} {'max rel.err':>11}  verdict",
    ]
    for f in report.features:
        error = "-" if f.max_rel_error is None else f"{f.max_rel_error:.2e}"
        lines.append(
            f"  {f.feature:<34} {f.compared:>8} {f.matched:>8} {f.missing_online:>8} {f.missing_offline:>8} "
            f"{f.different:>7} {f.lag:>6} {f.skew:>6} {error:>11}  {f.verdict}"
        )
        for example in f.examples:
            lines.append(f"      e.g. {example}")
    lines.append(
        f"  real skew: {report.skew} value(s)"
        + ("" if not report.skew else " served that training would not have seen (examples above)")
    )
    return lines


def export(report: ConsistencyReport) -> None:
    """The report as Prometheus gauges (core/metrics.py; the FeaturectlServingSkew alert reads the skew)."""
    import time

    from core import metrics

    for f in report.features:
        for outcome in ("matched", "missing_online", "missing_offline", "different", "lag", "skew"):
            metrics.CONSISTENCY_VALUES.labels(report.service, f.feature, outcome).set(getattr(f, outcome))
        metrics.CONSISTENCY_SKEW.labels(report.service, f.feature).set(f.skew)
    metrics.CONSISTENCY_CHECKED.labels(report.service).set(time.time())


def last_file(data_dir: Path) -> Path:
    return data_dir / "consistency" / "last.json"


def save_last(data_dir: Path, report: ConsistencyReport) -> None:
    """Keep each service's latest verdict (for `featurectl health`)."""
    import time

    from monitoring import last_verdicts

    entry = {
        "checked_at": time.time(),
        "rows": report.rows,
        "skew": {f.feature: f.skew for f in report.features if f.skew},
        "lag": sum(f.lag for f in report.features),
        "window": [report.start, report.end],
    }
    last_verdicts.save(last_file(data_dir), {report.service: entry})


def load_last(data_dir: Path) -> dict[str, dict[str, Any]]:
    from monitoring import last_verdicts

    return last_verdicts.load(last_file(data_dir))
