"""Which Redis shard holds what: rooms and users map to one of PARTITIONS logical partitions by a
stable hash of their id, and partitions to the shards of REDIS_URLS in contiguous ranges, so adding
shards moves whole partitions (docs/scaling.md). Every key of a partition carries its hash tag."""

import zlib

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# Fixed forever: a room's partition never changes, only which shard holds the partition.
PARTITIONS = 1024


def partition_of(entity_id: int) -> int:
    return zlib.crc32(str(entity_id).encode()) % PARTITIONS


def shard_of(partition: int, shards: int) -> int:
    """Partitions in order over the shards in order: shard i holds one contiguous range."""
    return partition * shards // PARTITIONS


def hash_tag(partition: int) -> str:
    """Keys and channels sharing it sit in one Redis Cluster slot too, so one script touches one node."""
    return f"{{p{partition}}}"


def reconnect_once() -> Retry:
    """The retry policy of every async Redis connection of the app: a command whose pooled connection
    turns out dead runs once more on a new one. redis-py hands out a connection the network reset
    (a Redis restart or failover, a balancer dropping it) as if alive, so without this the first
    command on each pooled connection fails after every blip (a join refused, a ban's live close
    raised). Connection errors only, not timeouts: a command that timed out may still run. A
    command that reached Redis before its connection died may run twice, which every command of the
    app allows (a send's client_id is answered, a presence entry set again, an event the sockets
    apply once)."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def shard_client(spec: dict, *, reconnect: bool = True) -> aioredis.Redis:
    """A client for one shard; a Sentinel shard's follows its master through failovers. Its commands
    run again once on a new connection when theirs was dead (reconnect_once); not a pub/sub reader's
    (`reconnect=False`), which must see the connection fail: what was published meanwhile is lost."""
    timeouts = {"socket_timeout": 5, "socket_connect_timeout": 5, "health_check_interval": 30}
    if reconnect:
        timeouts["retry"] = reconnect_once()
    if "url" in spec:
        # A blocking pool: a burst (thousands of sockets closing at once) waits for a connection
        # instead of failing with MaxConnectionsError, as the default pool does past its limit.
        pool = aioredis.BlockingConnectionPool.from_url(spec["url"], max_connections=64, timeout=10, **timeouts)
        return aioredis.Redis(connection_pool=pool)
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel(spec["sentinels"], sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1},
                        **timeouts)
    return sentinel.master_for(spec["master_name"], db=spec["db"], password=spec["password"])


def shard_name(spec: dict) -> str:
    """For logs and readiness: the URL without its password, or the Sentinel master's name."""
    if "url" in spec:
        from urllib.parse import urlsplit

        parts = urlsplit(spec["url"])
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
    return f"sentinel:{spec['master_name']}/{spec['db']}"
