"""Aggregation values at label times from a change history, in DuckDB: the offline side of semantics.py.

For each label (key, T): the last version of each source row committed by T, dropped if it is a delete,
kept if its key is the label's and its event time lies in (T - w, T]; then the function over them. One SQL
query per window (the rows per label are picked once and shared by the functions of that window).

The history is any DuckDB relation with these columns (the Delta history of a row view maps onto them):
``_row`` (the source row's key), ``_key`` (the aggregation key of that version), ``_event_time``,
``_committed`` (commit time), ``_deleted``, ``_version``, ``_minor``, and the aggregated columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from aggregations.spec import Aggregation


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


def _expression(agg: Aggregation, index: int) -> list[str]:
    col = f'h."{agg.column}"' if agg.column else ""
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
    con: Any, history: str, labels: Sequence[tuple[Any, datetime]], aggregations: Sequence[Aggregation]
) -> list[dict[str, Any]]:
    """Each label's value of every aggregation (a dict by feature name, in label order)."""
    out: list[dict[str, Any]] = [{} for _ in labels]
    con.execute("CREATE OR REPLACE TEMP TABLE _labels (_i BIGINT, _key VARCHAR, _at TIMESTAMPTZ)")
    con.executemany(
        "INSERT INTO _labels VALUES (?, ?, ?)", [(i, str(k), at) for i, (k, at) in enumerate(labels)]
    )
    by_window: dict[Any, list[tuple[int, Aggregation]]] = {}
    for index, agg in enumerate(aggregations):
        by_window.setdefault(agg.window, []).append((index, agg))
    for window, aggs in by_window.items():
        selects = [e for index, agg in aggs for e in _expression(agg, index)]
        query = f"""
            SELECT l._i, {", ".join(selects)}
            FROM _labels l
            LEFT JOIN LATERAL (
                SELECT * FROM (
                    SELECT v.*, row_number() OVER (PARTITION BY v._row ORDER BY v._version DESC, v._minor DESC) AS _n
                    FROM {history} v WHERE v._committed <= l._at
                ) WHERE _n = 1 AND NOT _deleted AND CAST(_key AS VARCHAR) = l._key
                  AND _event_time > l._at - ?::INTERVAL AND _event_time <= l._at
            ) h ON true
            GROUP BY l._i ORDER BY l._i
        """
        seconds = int(window.total_seconds())
        result = con.execute(query, [f"{seconds} seconds"])
        names = [d[0] for d in result.description]
        for row in result.fetchall():
            record = dict(zip(names, row, strict=True))
            target = out[record["_i"]]
            for index, agg in aggs:
                target[agg.name] = _value(agg, index, record)
    return out


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
