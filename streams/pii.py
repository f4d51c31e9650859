"""PII handling, declared per feature view and column, applied where a row image becomes a feature row.

A view declares, in its tags, what happens to a source column holding personal data:

    pii.<column> = "drop"     the value is removed (the feature, if any, reads null)
                   "hash"     HMAC-SHA256 keyed with the secret setting pii_hash_key, as 64 hex chars:
                              equal inputs give equal outputs (joins and counts still work), not reversible
                              without the key
                   "mask"     partly shown: an e-mail keeps its first character and domain (j***@example.com),
                              other text its first character (J***)
                   "redact"   replaced by "[REDACTED]"

It is applied in ``streams.transform.row_from_image``, before validation, so neither store, the history,
the embeddings nor a backfill ever hold the raw value; and to the row images kept in a dead letter
(``mask_message``) with the strictest handling any view of the table declares (``table_policy``), so the
dead-letter topic carries masked values too. A replayed dead letter says which columns it already holds
handled (``DeadLetter.pii``): they are not handled twice. Hash, mask and redact make text: a feature
they apply to must be a String. A view whose embedding reads a column some view of its table declares
PII is refused unless it lists the column in ``embedding.allow_pii`` (streams/routes.py); it then embeds
and stores that column as it is, having said so.

Debezium's ``column.exclude.list`` keeps a column no view needs out of Kafka altogether (docs/processor.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from core.errors import ConfigError

TAG_PREFIX = "pii."
ALLOW_TAG = "embedding.allow_pii"
REDACTED = "[REDACTED]"
# Stricter handling wins where views of one table disagree (the dead-letter topic takes the strictest).
STRICTNESS = {"mask": 1, "hash": 2, "redact": 3, "drop": 4}
HANDLINGS = tuple(STRICTNESS)
TEXT_HANDLINGS = ("hash", "mask", "redact")  # their output is a string


def declared(view: str, tags: Mapping[str, str]) -> dict[str, str]:
    """column -> handling from a view's ``pii.<column>`` tags; an unknown handling is a ConfigError."""
    out: dict[str, str] = {}
    for tag, value in tags.items():
        if not tag.startswith(TAG_PREFIX):
            continue
        column, handling = tag[len(TAG_PREFIX) :], value.strip().lower()
        if handling not in STRICTNESS:
            raise ConfigError(
                f"feature view {view}: tag {tag}={value!r} is not a PII handling",
                f"use one of {', '.join(HANDLINGS)}",
            )
        out[column] = handling
    return out


def allowed(tags: Mapping[str, str]) -> set[str]:
    """Columns a view's embedding may read although they are declared PII (``embedding.allow_pii``)."""
    return {c.strip() for c in tags.get(ALLOW_TAG, "").split(",") if c.strip()}


def strictest(policies: list[Mapping[str, str]]) -> dict[str, str]:
    """Merge several views' declarations for one table: per column the strictest handling."""
    out: dict[str, str] = {}
    for policy in policies:
        for column, handling in policy.items():
            if STRICTNESS[handling] > STRICTNESS.get(out.get(column, ""), 0):
                out[column] = handling
    return out


_key_override: bytes | None = None


def set_hash_key(key: bytes | None) -> None:
    """Use ``key`` (tests, or a caller holding it already); None: read settings again."""
    global _key_override
    _key_override = key
    _settings_key.cache_clear()


@functools.cache
def _settings_key() -> bytes:
    from core.settings import load_settings

    value = load_settings().secret("pii_hash_key")
    if not value:
        raise ConfigError(
            "a feature view declares pii.<column> = hash, and no PII hash key is set",
            "set FEATURECTL_PII_HASH_KEY (the same on every processor and job host; changing it changes "
            "every hashed value), or run `featurectl stack up`, which generates one in the secrets file",
        )
    return value.encode()


def hash_key() -> bytes:
    return _key_override if _key_override is not None else _settings_key()


def mask_text(text: str) -> str:
    if "@" in text:
        local, _, domain = text.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return f"{text[:1]}***" if text else text


def apply(handling: str, value: Any) -> Any:
    """One value, handled; None stays None (a null is not personal data)."""
    if value is None or handling == "drop":
        return None
    if handling == "redact":
        return REDACTED
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, default=str)
        if isinstance(value, (dict, list))
        else str(value)
    )
    if handling == "hash":
        return hmac.new(hash_key(), text.encode(), hashlib.sha256).hexdigest()
    return mask_text(text)


def mask_image(image: Mapping[str, Any] | None, policy: Mapping[str, str]) -> dict[str, Any] | None:
    """A row image with ``policy`` applied (a dropped column removed)."""
    if image is None:
        return None
    out = {k: v for k, v in image.items() if policy.get(k) != "drop"}
    for column, handling in policy.items():
        if column in out:
            out[column] = apply(handling, out[column])
    return out


def mask_message(raw: bytes | None, policy: Mapping[str, str]) -> bytes | None:
    """A Debezium change event (or a backfill dead letter's row image) with ``policy`` applied to its
    ``before``/``after`` images. Bytes that are not such JSON are returned unchanged: nothing to mask."""
    if raw is None or not policy:
        return raw
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    envelope = doc.get("payload") if isinstance(doc, dict) and isinstance(doc.get("payload"), dict) else doc
    if not isinstance(envelope, dict):
        return raw
    for side in ("before", "after"):
        if isinstance(envelope.get(side), dict):
            envelope[side] = mask_image(envelope[side], policy)
    return json.dumps(doc, separators=(",", ":"), default=str).encode()
