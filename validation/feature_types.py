"""Does each decoded value fit its feature's declared Feast type? Checked for every row of every view,
suite or not, by the stream and the backfill alike (validation/validator.py), because what does not fit
is otherwise written wrong without a word, or fails the whole write:

- a list with a NULL element: Feast's protos cannot hold one, and Feast writes ``0`` or ``""`` in its
  place (``[1, NULL, 3]`` would be served as ``[1, 0, 3]``);
- a timestamp Python cannot hold: Postgres ``infinity`` (Debezium sends year 292278994) or a year
  beyond 9999;
- an integer outside Int32, a string where a number is declared, and so on.

Such a row goes to the dead-letter topic as a failed ``fits_feature_type`` expectation naming the
column, why, and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from feast.types import Array, FeastType, PrimitiveFeastType

EXPECTATION = "fits_feature_type"
Check = Callable[[Any], str | None]  # None: fits; else why not
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _int(bounds: tuple[int, int]) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{_shown(v)} is not an integer"
        if not bounds[0] <= v <= bounds[1]:
            return f"{v} is outside the declared integer type's range"
        return None

    return check


def _float(v: Any) -> str | None:
    return None if isinstance(v, float) else f"{_shown(v)} is not a number"


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"{_shown(v)} is not text"


def _bytes(v: Any) -> str | None:
    return None if isinstance(v, bytes) else f"{_shown(v)} is not bytes"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"{_shown(v)} is not a boolean"


def _time(v: Any) -> str | None:
    if isinstance(v, datetime):
        return None
    if isinstance(v, str) and (v.startswith("+") or v.lstrip("-") == "infinity" or v[:5].isdigit()):
        return (
            f"{_shown(v)} is Postgres 'infinity' or beyond year 9999 (Debezium sends 'infinity' as year "
            "292278994): Python and Feast timestamps end at 9999-12-31"
        )
    return f"{_shown(v)} is not a timestamp"


_BY_KIND: dict[str, Check] = {
    "INT32": _int(_INT32),
    "INT64": _int(_INT64),
    "FLOAT32": _float,
    "FLOAT64": _float,
    "STRING": _str,
    "BYTES": _bytes,
    "BOOL": _bool,
    "UNIX_TIMESTAMP": _time,
}
_FIX = {
    "UNIX_TIMESTAMP": "cap the value in Postgres (e.g. LEAST(col, '9999-12-31')) or declare the feature as String",
    "LIST": "remove the NULLs in Postgres (array_remove(col, NULL)) or declare the feature as String",
}


def checker(dtype: FeastType) -> Check | None:
    """The check of one Feast type; None for types not checked here."""
    if isinstance(dtype, Array):
        element = checker(dtype.base_type)

        def array(v: Any) -> str | None:
            if not isinstance(v, list):
                return f"{_shown(v)} is not a list"
            for i, item in enumerate(v):
                if item is None:
                    return (
                        f"element {i} is NULL: Feast lists cannot hold NULL (Feast would serve 0 or '' in its "
                        "place)"
                    )
                why = element(item) if element is not None else None
                if why is not None:
                    return f"element {i}: {why}"
            return None

        return array
    kind = dtype.name if isinstance(dtype, PrimitiveFeastType) else str(dtype)
    return _BY_KIND.get(kind)


def fix_for(dtype: FeastType) -> str:
    if isinstance(dtype, Array):
        return _FIX["LIST"]
    kind = dtype.name if isinstance(dtype, PrimitiveFeastType) else str(dtype)
    return _FIX.get(kind, f"make the column's values fit {kind}, or declare the feature with the column's type")


def misfits(
    rows: Sequence[dict[str, Any]], features: Sequence[tuple[str, FeastType]]
) -> dict[int, list[tuple[str, str, str, Any]]]:
    """Per row position, the features whose value does not fit: (feature, why, fix, value). NULLs fit."""
    checks = [(name, check, dtype) for name, dtype in features if (check := checker(dtype)) is not None]
    out: dict[int, list[tuple[str, str, str, Any]]] = {}
    for i, row in enumerate(rows):
        for name, check, dtype in checks:
            value = row.get(name)
            if value is None:
                continue
            why = check(value)
            if why is not None:
                out.setdefault(i, []).append((name, why, fix_for(dtype), value))
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
