"""The Redis online store: Feast's ``redis`` layout (one hash per entity), guarded by a Lua script.

``feast.py`` the Feast plugin; ``sink.py`` the processor's writer and its Lua guard. It keeps no
vectors: views with a vector field are refused. The local service is started by stack/redis.py.
"""

from stores.registry import OnlineStoreKind

KIND = OnlineStoreKind(
    name="redis",
    label="Redis, any number of hosts",
    types={
        "stores.redis.feast.RedisOnlineStore": False,
        "onlinestore.redis_store.RedisOnlineStore": False,  # the name before stores/ (kept working)
        "redis": False,
    },
    sink="stores.redis.sink:RedisOnlineSink",
    hosts="any number of hosts",
    extras=("stores",),
    errors="stores.redis.errors:transient",
    probe="stores.redis.probe:probe",
)
