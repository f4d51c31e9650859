"""Feast's Redis online store, reading an absent entity as absent, as a Feast plugin.

feature_store.yaml selects it by import path (the rest are Feast's own ``redis`` settings)::

    online_store:
      type: stores.redis.feast.RedisOnlineStore
      connection_string: 127.0.0.1:26379,password=${FEATURECTL_REDIS_PASSWORD}

The layout is Feast's, unchanged (stock ``type: redis`` reads the same hashes). The one difference:
Feast 0.67 answers an entity whose hash holds nothing of the view (never written, or deleted by the
processor) with empty values and status PRESENT; this store answers it as it does for every other
store, NOT_FOUND, by looking at the view's ``_ts:<view>`` field that every write sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ByteString, Literal

from feast import FeatureView, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStore as FeastRedisOnlineStore
from feast.infra.online_stores.redis import RedisOnlineStoreConfig as FeastRedisConfig
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from stores.redis.transactions import frontier_key, key_prefix
from stores.ttl import ReadTtl

TYPE = "stores.redis.feast.RedisOnlineStore"
OLD_TYPE = "onlinestore.redis_store.RedisOnlineStore"  # the name before stores/: onlinestore/, offlinestore/ keep it working


class RedisOnlineStoreConfig(FeastRedisConfig):
    """Feast's ``redis`` online store settings (Feast finds the plugin's config by this name)."""

    type: Literal["stores.redis.feast.RedisOnlineStore", "onlinestore.redis_store.RedisOnlineStore"] = TYPE  # type: ignore[assignment]


class RedisOnlineStore(ReadTtl, FeastRedisOnlineStore):
    def read_serialized(
        self, config: RepoConfig, table: FeatureView, keys: list[bytes], requested_features: list[str]
    ) -> list[tuple[datetime | None, dict[str, bytes] | None]] | None:
        """``online_read`` by Feast's serialised entity keys, for the feature server's lookups (serving/lookup.py):
        Feast's own steps, from its key bytes on (Feast serialises a proto per key: a fifth of a 100-key read),
        each value as its stored bytes (the server converts them; an absent field is empty bytes, Feast's
        empty proto). The event time as ``_get_features_for_entity`` computes it."""
        name = _versioned_fv_name(table, config)
        requested, fields = self._generate_hset_keys_for_features(
            table, list(requested_features), fv_name_override=name
        )
        project = config.project.encode("utf-8")
        stamp_field = f"_ts:{name}"
        times: dict[bytes, datetime] = {}
        out: list[tuple[datetime | None, dict[str, bytes] | None]] = []
        for values in self._read_hash_fields(config, [(key + project, fields) for key in keys]):
            held = dict(zip(requested, values, strict=False))
            stamp = held.pop(stamp_field, None)
            if not stamp or not held:  # the view holds nothing for this entity (see the module docstring)
                out.append((None, None))
                continue
            stamp = bytes(stamp)
            when = times.get(stamp)
            if when is None:
                ts = Timestamp.FromString(stamp)
                # Feast's arithmetic (a float of seconds), so the same microsecond as its read.
                when = times[stamp] = datetime.fromtimestamp(ts.seconds + ts.nanos / 1_000_000_000.0, tz=UTC)
            out.append((when, {feature: bytes(value) if value else b"" for feature, value in held.items()}))
        return out

    def release_position(self, config: RepoConfig) -> int | None:
        """Where the processor's releases of source transactions stand (stores/redis/transactions.py): a reader that
        finds it equal before and after several reads saw no release between them (serving/lookup.py); -1
        before the first. None with the glide client (not read)."""
        if str(getattr(config.online_store.client, "value", config.online_store.client)) != "redis":
            return None
        raw = self._get_client(config.online_store).hget(frontier_key(key_prefix(config.project)), "position")
        return -1 if raw is None else int(raw)

    def _read_hash_fields(
        self, config: RepoConfig, commands: list[tuple[bytes, list[str | bytes]]]
    ) -> list[Any]:
        """Feast's reads of one lookup as one MULTI/EXEC (Feast pipelines them without): the lookup sees the
        store at one instant, never part of a source transaction the processor released (stores/redis/transactions.py).
        The glide client keeps Feast's batch."""
        if str(getattr(config.online_store.client, "value", config.online_store.client)) != "redis":
            return super()._read_hash_fields(config, commands)
        client = self._get_client(config.online_store)
        with client.pipeline(transaction=True) as pipe:
            for key, fields in commands:
                pipe.hmget(key, fields)
            return pipe.execute()  # type: ignore[no-any-return]

    def _get_features_for_entity(
        self, values: Sequence[ByteString | None], feature_view: str, requested_features: list[str]
    ) -> tuple[datetime | None, dict[str, ValueProto] | None]:
        held = dict(zip(requested_features, values, strict=False))
        if not held.get(f"_ts:{feature_view}"):
            return None, None  # the view holds nothing for this entity
        return super()._get_features_for_entity(values, feature_view, requested_features)
