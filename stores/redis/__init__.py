"""The Redis online store: Feast's ``redis`` layout (one hash per entity), guarded by a Lua script.

``feast.py`` the Feast plugin; ``sink.py`` the processor's writer and its Lua guard; ``errors.py`` and
``probe.py`` its driver's errors told apart and its health probe; ``server.py`` and ``settings.py`` the
local server (``featurectl stack up --with redis``) and its settings. It keeps no vectors: views with a
vector field are refused.
"""

from stores.local import LocalService
from stores.registry import OnlineStoreKind

KIND = OnlineStoreKind(
    name="redis",
    label="Redis",
    types={
        "stores.redis.feast.RedisOnlineStore": False,
        "onlinestore.redis_store.RedisOnlineStore": False,  # the name before stores/ (kept working)
        "redis": False,
    },
    sink="stores.redis.sink:RedisOnlineSink",
    errors="stores.redis.errors:transient",
    probe="stores.redis.probe:probe",
    many_hosts=True,
    parallel_writes=True,
    transactions=True,  # a flush is one Lua script: atomic on the server
    atomic_source_transactions=True,
    # hiredis is the client's C protocol packer and parser (the processor's Redis writes: 1.8x with it,
    # bench/processor_bench.py --online-store redis).
    packages=("redis>=5,<9", "hiredis>=3,<4"),
    extra="stores",
    clients=("redis>=5,<9", "hiredis>=3,<4"),
    local=LocalService(
        name="redis", server="stores.redis.server:RedisServer", port="redis_port", secrets=("redis_password",)
    ),
)
