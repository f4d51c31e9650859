"""Aggregation values at label times from a change history, in DuckDB: the offline side of semantics.py.

For each label (key, T): the last version of each source row committed by T, dropped if it is a delete,
kept if its key is the label's and its event time lies in (T - w, T]; then the function over them. One SQL
query per window (the rows per label are picked once and shared by the functions of that window).

The history is any DuckDB relation with these columns (the Delta history of a row view maps onto them):
``_row`` (the source row's key), ``_key`` (the aggregation key of that version), ``_event_time``,
``_committed`` (commit time), ``_deleted``, ``_version``, ``_minor``, and the aggregated columns (as the
processor stored them: Debezium's text, typed here per function and feature type).

Exact, as semantics.py states it: a sum or a numeric filter runs in DuckDB's DECIMAL(38, 10) only when every
value of its column fits it exactly (``_FITS``); a column holding others (a double's 1e-221 or 1e300, a
numeric of scale 12) has the aggregations that read it as numbers computed in Python by semantics.py's own
``compute`` over the same rows, slower and exact. min, max and last are typed by the feature's type (a
Float64's as DOUBLE, which orders as the online value does).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from aggregations.rows import typed
from aggregations.semantics import Contribution, compute
from aggregations.spec import Aggregation

# Text DECIMAL(38, 10) holds exactly, with room for a sum of 10^8 such values (28 integer digits).
_FITS = r"-?[0-9]{1,20}(\.[0-9]{1,10})?"
# How min, max and last read a column, by the feature's (or list's element) type.
_CASTS = {"Float64": "DOUBLE", "Float32": "DOUBLE", "Int64": "BIGINT", "Int32": "BIGINT",
          "UnixTimestamp": "TIMESTAMPTZ", "String": "VARCHAR"}  # fmt: skip


def _predicate(agg: Aggregation) -> str:
    """The filter of ``agg`` in SQL (semantics.passes), or TRUE."""
    condition = agg.where
    if condition is None:
        return "TRUE"
    col = f'h."{condition.column}"'
    if condition.op in ("is null", "is not null"):
        return f"{col} {condition.op.upper()}"
    op = "<>" if condition.op == "!=" else condition.op
    if condition.numeric:
        return f"TRY_CAST({col} AS DECIMAL(38, 10)) {op} {condition.value}"
    text = str(condition.value).replace("'", "''")
    return f"CAST({col} AS VARCHAR) {op} '{text}'"


def _read_as(agg: Aggregation) -> str:
    """``agg``'s column as its function reads it."""
    col = f'h."{agg.column}"'
    if agg.function in ("sum", "avg"):
        return f"TRY_CAST({col} AS DECIMAL(38, 10))"  # exact: only for columns that fit (_unfit)
    if agg.function == "count_distinct":
        # Online, a float's -0.0 and 0.0 are one value (as in Postgres); its history text tells them apart.
        text = f"CAST({col} AS VARCHAR)"
        return f"CASE WHEN {text} = '-0.0' THEN '0.0' ELSE {text} END"
    dtype = getattr(agg.dtype, "base_type", agg.dtype) if agg.function == "last" else agg.dtype
    cast = _CASTS.get(str(dtype)) if dtype is not None else None
    return f"TRY_CAST({col} AS {cast})" if cast else col


def _numeric_columns(agg: Aggregation) -> set[str]:
    """The columns ``agg`` reads as exact numbers."""
    out = {agg.column} if agg.column and agg.function in ("sum", "avg") else set()
    if agg.where is not None and agg.where.numeric:
        out.add(agg.where.column)
    return out


def _unfit(con: Any, history: str, columns: set[str]) -> set[str]:
    """Those of ``columns`` holding a value DECIMAL(38, 10) cannot hold exactly (one scan of the history)."""
    if not columns:
        return set()
    ordered = sorted(columns)
    counts = ", ".join(
        f"""count(*) FILTER (WHERE "{c}" IS NOT NULL AND NOT regexp_full_match(CAST("{c}" AS VARCHAR), '{_FITS}'))"""
        for c in ordered
    )
    found = con.execute(f"SELECT {counts} FROM {history}").fetchone()
    return {c for c, n in zip(ordered, found, strict=True) if n}


def _expression(agg: Aggregation, index: int) -> list[str]:
    col = _read_as(agg) if agg.column else ""
    alias = f"a{index}"
    where = f" FILTER (WHERE {_predicate(agg)})"
    if agg.function == "count":
        return [f"count(h._row){where} AS {alias}"]
    if agg.function == "sum":
        return [f"sum({col}){where} AS {alias}"]
    if agg.function == "avg":  # divided in Python: DuckDB's decimal division gives a double
        return [f"sum({col}){where} AS {alias}_sum", f"count({col}){where} AS {alias}_n"]
    if agg.function in ("min", "max"):
        return [f"{agg.function}({col}){where} AS {alias}"]
    if agg.function == "count_distinct":
        return [f"count(DISTINCT {col}){where} AS {alias}"]
    if agg.function == "last":
        order = "h._event_time DESC, h._version DESC, h._minor DESC, h._row DESC"
        return [
            f"list({col} ORDER BY {order}) FILTER (WHERE {col} IS NOT NULL AND {_predicate(agg)}) AS {alias}"
        ]
    raise ValueError(f"unknown function {agg.function!r}")


def values_at(
    con: Any,
    history: str,
    labels: Sequence[tuple[Any, datetime] | tuple[Any, datetime, datetime]],
    aggregations: Sequence[Aggregation],
) -> list[dict[str, Any]]:
    """Each label's value of every aggregation (a dict by feature name, in label order). A label (key, T) reads
    the changes committed by T; (key, T, C) those committed by C, its window still ending at T: what an online
    store that had applied the changes up to C served at T (monitoring/consistency.py's freshness lag)."""
    out: list[dict[str, Any]] = [{} for _ in labels]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _labels (_i BIGINT, _key VARCHAR, _at TIMESTAMPTZ, _cut TIMESTAMPTZ)"
    )
    con.executemany(
        "INSERT INTO _labels VALUES (?, ?, ?, ?)",
        [(i, str(label[0]), label[1], label[-1]) for i, label in enumerate(labels)],
    )
    unfit = _unfit(con, history, set().union(*(_numeric_columns(a) for a in aggregations)))
    by_window: dict[Any, list[tuple[int, Aggregation]]] = {}
    in_python: dict[Any, list[Aggregation]] = {}
    for index, agg in enumerate(aggregations):
        if _numeric_columns(agg) & unfit:
            in_python.setdefault(agg.window, []).append(agg)
        else:
            by_window.setdefault(agg.window, []).append((index, agg))
    for window, aggs in by_window.items():
        selects = [e for index, agg in aggs for e in _expression(agg, index)]
        query = f"SELECT l._i, {', '.join(selects)} FROM _labels l {_rows_in(history)} GROUP BY l._i ORDER BY l._i"
        result = con.execute(query, [_interval(window)])
        names = [d[0] for d in result.description]
        for row in result.fetchall():
            record = dict(zip(names, row, strict=True))
            target = out[record["_i"]]
            for index, agg in aggs:
                target[agg.name] = _value(agg, index, record)
    for window, python_aggs in in_python.items():
        _computed(con, history, window, python_aggs, out)
    return out


def _rows_in(history: str) -> str:
    """Each label's rows in a window (its length the query's parameter): the last version of each source
    row committed by the label's cut (its time unless given), not a delete, of the label's key, its event time in (T - w, T].

    Only rows that ever had the label's key are candidates (a hash join), and all their versions are
    ranked, since a row's last version may have moved it to another key. (A LATERAL subquery per label
    ranked the whole history for every label: 191 s for 300 labels over 100,000 rows.)"""
    return f"""
        LEFT JOIN (
            SELECT * FROM (
                SELECT c._i AS _label, c._at AS _label_at, c._key AS _label_key, v.*,
                    row_number() OVER (PARTITION BY c._i, v._row ORDER BY v._version DESC, v._minor DESC) AS _n
                FROM (
                    SELECT l._i, l._at, l._cut, l._key, p._row FROM _labels l
                    JOIN (SELECT DISTINCT CAST(_key AS VARCHAR) AS _key, _row FROM {history}) p ON p._key = l._key
                ) c JOIN {history} v ON v._row = c._row AND v._committed <= c._cut
            ) WHERE _n = 1 AND NOT _deleted AND CAST(_key AS VARCHAR) = _label_key
              AND _event_time > _label_at - ?::INTERVAL AND _event_time <= _label_at
        ) h ON h._label = l._i"""


def _interval(window: Any) -> str:
    return f"{int(window.total_seconds())} seconds"


def _computed(
    con: Any, history: str, window: Any, aggs: list[Aggregation], out: list[dict[str, Any]]
) -> None:
    """``aggs`` (of one window) for every label by semantics.compute over the label's rows, as online."""
    columns = sorted({c for a in aggs for c in (a.column, a.where.column if a.where else None) if c})
    selected = "".join(f', h."{c}"' for c in columns)
    query = f"""SELECT l._i, h._row, h._version, h._minor, h._event_time{selected} FROM _labels l
        {_rows_in(history)} WHERE h._row IS NOT NULL ORDER BY l._i"""
    rows: dict[int, list[tuple[Any, ...]]] = {}
    for record in con.execute(query, [_interval(window)]).fetchall():
        rows.setdefault(record[0], []).append(record[1:])
    for i, target in enumerate(out):
        for agg in aggs:
            held = []
            for row, version, minor, when, *values in rows.get(i, []):
                raw = dict(zip(columns, values, strict=True))
                value = {agg.where.column: raw[agg.where.column]} if agg.where else {}
                if agg.column:
                    value[agg.column] = typed(agg, raw[agg.column])
                held.append(Contribution((row,), (version, minor), when, value))
            target[agg.name] = compute(agg, held)


def _value(agg: Aggregation, index: int, record: dict[str, Any]) -> Any:
    alias = f"a{index}"
    if agg.function == "avg":
        total, n = record[f"{alias}_sum"], record[f"{alias}_n"]
        return Decimal(total) / n if n else None
    if agg.function == "last":
        return list(record[alias] or [])[: agg.k]
    value = record[alias]
    if agg.function == "sum" and value is not None:
        return Decimal(value)
    return value
