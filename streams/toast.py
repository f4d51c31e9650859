"""Unchanged TOASTed values: recognising Debezium's placeholders, and what stands in their place.

Postgres stores a large value (over about 2 kB after compression) out of line ("TOAST"). Under
``REPLICA IDENTITY DEFAULT``, Postgres's default, an UPDATE that leaves such a column unchanged does
not write its value to the WAL, so Debezium cannot know it and emits a placeholder instead
(``unavailable.value.placeholder``, default ``__debezium_unavailable_value``), in a form that
depends on the column type (Debezium's ``UnchangedToastedPlaceholder``): the string itself (text,
varchar, json, jsonb, xml, ...), its bytes (bytea: base64 or hex under ``binary.handling.mode``),
a one-element list for text[], bytea[] and uuid[] arrays, the bytes as numbers for int[] and
bigint[] arrays, a one-entry map for hstore. ``REPLICA IDENTITY FULL`` avoids it (Debezium then
fills the value from the old row image), at the cost of logging whole old rows.

The rule, whatever the table's replica identity: a placeholder never becomes a feature value, is
never validated, embedded or written to the history. The column did not change, so its value is
the one the entity had just before this change: the latest earlier change of the entity in the same
batch, else the online store's current value (the last change applied for the entity). Where neither
has it (the entity never reached the online store), the row cannot be known from the stream: it goes
to the dead-letter topic naming the columns and the fix (``REPLICA IDENTITY FULL``, then a snapshot).
Only the connector's default placeholder is recognised: keep ``unavailable.value.placeholder`` unset.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

PLACEHOLDER = "__debezium_unavailable_value"
_BYTES = PLACEHOLDER.encode()
# Every form Debezium gives the placeholder, as it appears in JSON without schemas.
_STRINGS = frozenset(
    {
        PLACEHOLDER,
        base64.b64encode(_BYTES).decode(),
        base64.urlsafe_b64encode(_BYTES).decode(),
        _BYTES.hex(),
    }
)
# Java's UUID.nameUUIDFromBytes: an MD5 name-based (version 3) UUID of the bytes.
_UUID = str(uuid.UUID(bytes=hashlib.md5(_BYTES).digest(), version=3))
_LISTS = ([b for b in _BYTES], *([s] for s in (*_STRINGS, _UUID)))
_MAP = {PLACEHOLDER: PLACEHOLDER}
_PLAIN = (int, float)  # bool is an int
_NONE: frozenset[str] = frozenset()


def is_unavailable(raw: Any) -> bool:
    """Whether a value from a Debezium row image is the unchanged-TOAST placeholder, in any form."""
    if isinstance(raw, str):
        if raw in _STRINGS:
            return True
        # hstore under hstore.handling.mode=json arrives as a JSON string of the map.
        return raw.startswith('{"' + PLACEHOLDER) and _json_equals(raw, _MAP)
    if isinstance(raw, list):
        return len(raw) in (1, len(_BYTES)) and any(raw == form for form in _LISTS)
    if isinstance(raw, dict):
        return raw == _MAP
    return False


def _json_equals(text: str, expected: Any) -> bool:
    try:
        return bool(json.loads(text) == expected)
    except ValueError:
        return False


def unavailable_columns(image: dict[str, Any] | None, columns: Iterable[str]) -> frozenset[str]:
    """The ``columns`` whose value in ``image`` is a placeholder (empty for nearly every event)."""
    if not image:
        return _NONE
    # Numbers, booleans and nulls are never the placeholder: only other values pay for the check.
    found = [
        c
        for c in columns
        if (v := image.get(c)) is not None and not isinstance(v, _PLAIN) and is_unavailable(v)
    ]
    return frozenset(found) if found else _NONE


def unresolved_reason(table: str, columns: Iterable[str]) -> str:
    """The dead-letter reason for a row whose unchanged TOASTed columns nothing could fill in."""
    names = ", ".join(sorted(columns))
    return (
        f"unchanged TOASTed column(s) {names} of {table} are not in the change event (the table's "
        "REPLICA IDENTITY is not FULL) and the online store holds no earlier value for this entity; "
        f"fix: ALTER TABLE {table} REPLICA IDENTITY FULL, then `featurectl snapshot {table}` to re-read it"
    )
