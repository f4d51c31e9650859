"""What an aggregation feature's value is, stated once; the brute-force oracle every implementation must equal.

**The value at time T for aggregation key k** is the function over the *live row versions at T* whose key
is k and whose event time lies in the *window ending at T*:

- *live row versions at T*: for each source row (its primary key), the last change committed at or before
  T, in commit order (the change's version: WAL position, then its place in the transaction); a row whose
  last change is a delete (or none yet) contributes nothing. So an insert adds, a delete retracts, an update
  retracts the old image and adds the new one, also when it moves the row to another key or another window.
  A change delivered twice, re-read by a snapshot or replayed has a version already applied: it changes
  nothing (the row's state is a function of its last version, not of how many times it arrived).
- *the window ending at T*: event times ``t`` with ``T - w < t <= T`` (sliding, to the microsecond). Sliding
  rather than Chronon's sawtooth ``[round(T - w, hop), T)``: a model service reading "orders in the last 24 h"
  gets exactly that at every read, the offline point-in-time value at a label's time equals what the online
  store serves at that instant, and nothing depends on a hop size. It costs read-time work over the rows in
  the window (the state keeps them; state.py), where a sawtooth could serve a pre-combined tile. A row with an
  event time after T (future-dated) is not in the window yet; it enters when T reaches it, with no new change.
- *the filter* (optional, ``... where status = 'paid'``): only rows whose image passes it count, by SQL's
  rules (a NULL passes only ``is null``; numbers compared exactly).
- *the functions*, over the row values in the window (a NULL value is skipped, as SQL aggregates skip it;
  ``count`` counts rows):
  ``count`` rows; ``sum`` exact (decimal arithmetic with no rounding at all, so no float drift after an add
  and a retract and no dependence on the order of the values; NULL when no value); ``avg`` = exact sum /
  count of values, to 28 significant digits (NULL when none); ``min``/``max``; ``count_distinct`` distinct
  values; ``last(k)`` the values of the k rows with the latest event times among those with a value, latest
  first (ties: the higher row version first, then the row key), as a list.

The oracle below computes this from the whole change log, for tests to compare every implementation with.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Decimal, localcontext
from typing import Any

from aggregations.spec import Aggregation, Filter

Version = tuple[int, int]


@dataclass(frozen=True)
class Change:
    """One row change as the aggregation sees it (decoded from a Debezium event)."""

    row: tuple[Any, ...]  # the source row's primary key
    version: Version  # commit order: (WAL position, place in the transaction)
    committed: datetime  # commit time
    deleted: bool
    key: Any = None  # the aggregation key of the new image (None for a delete)
    event_time: datetime | None = None  # the new image's event time
    values: tuple[tuple[str, Any], ...] = ()  # the new image's aggregated columns, typed (numeric: Decimal)


@dataclass(frozen=True)
class Contribution:
    """A live row version: what it adds to its key's aggregations."""

    row: tuple[Any, ...]
    version: Version
    event_time: datetime
    values: dict[str, Any]


def live_rows(log: Iterable[Change], at: datetime) -> dict[Any, list[Contribution]]:
    """Per aggregation key, the live row versions at ``at`` (brute force over the whole log)."""
    last: dict[tuple[Any, ...], Change] = {}
    for change in log:
        if change.committed <= at and (change.row not in last or change.version > last[change.row].version):
            last[change.row] = change
    out: dict[Any, list[Contribution]] = {}
    for change in last.values():
        if change.deleted or change.event_time is None:
            continue
        out.setdefault(change.key, []).append(
            Contribution(change.row, change.version, change.event_time, dict(change.values))
        )
    return out


def in_window(event_time: datetime, at: datetime, agg: Aggregation) -> bool:
    return at - agg.window < event_time <= at


def passes(condition: Filter, value: Any) -> bool:
    """Whether a row whose ``condition.column`` holds ``value`` counts: SQL's rules (NULL passes only ``is
    null``); a numeric filter compares exact numbers (a value that is not one does not pass), a text filter
    the value's text."""
    if condition.op == "is null":
        return value is None
    if condition.op == "is not null":
        return value is not None
    if value is None:
        return False
    left: Any
    right: Any
    if condition.numeric:
        try:
            left, right = exact(value), Decimal(str(condition.value))
        except (ArithmeticError, ValueError, TypeError):
            return False
    else:
        left, right = (value if isinstance(value, str) else str(value)), condition.value
    return bool(_COMPARE[condition.op](left, right))


_COMPARE = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
            ">=": operator.ge}  # fmt: skip


def compute(agg: Aggregation, rows: Sequence[Contribution]) -> Any:
    """The function of ``agg`` over ``rows`` (already those in the window), of those passing its filter."""
    if agg.where is not None:
        condition = agg.where
        rows = [r for r in rows if passes(condition, r.values.get(condition.column))]
    if agg.function == "count":
        return len(rows)
    values = [r.values.get(agg.column) for r in rows] if agg.column else []
    present = [v for v in values if v is not None]
    if agg.function == "sum":
        return exact_sum(present) if present else None
    if agg.function == "avg":
        return exact_sum(present) / len(present) if present else None
    if agg.function == "min":
        return min(present) if present else None
    if agg.function == "max":
        return max(present) if present else None
    if agg.function == "count_distinct":
        return len(set(present))
    if agg.function == "last":  # of the rows with a value: a list holds no NULL (nor can Feast serve one)
        valued = [r for r in rows if r.values.get(agg.column or "") is not None]
        latest = sorted(valued, key=lambda r: (r.event_time, r.version, r.row), reverse=True)
        return [r.values[agg.column or ""] for r in latest[: agg.k]]
    raise ValueError(f"unknown function {agg.function!r}")


def exact_sum(values: Iterable[Any]) -> Decimal:
    """The sum of ``values`` without rounding (a double's 1e300 and 1e-300 add to their 601 digits): the
    same whatever the order, so the online state and a training set's offline sum agree to the last digit.
    Decimal's default context would round each addition to 28 digits, and the rounding depends on order."""
    with localcontext(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN):
        return sum((exact(v) for v in values), Decimal(0))


def exact(value: Any) -> Decimal:
    """A numeric value as an exact decimal (Debezium sends decimals as strings; floats by their shortest repr)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def oracle(log: Iterable[Change], key: Any, at: datetime, agg: Aggregation) -> Any:
    """The value of ``agg`` for ``key`` at ``at``, from the whole change log."""
    rows = [r for r in live_rows(log, at).get(key, []) if in_window(r.event_time, at, agg)]
    return compute(agg, rows)
