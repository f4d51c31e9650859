"""Old type name: see stores/redis/feast.py."""

from stores.redis.feast import RedisOnlineStore, RedisOnlineStoreConfig

__all__ = ["RedisOnlineStore", "RedisOnlineStoreConfig"]
