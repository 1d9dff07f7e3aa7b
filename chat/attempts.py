"""Counters of attempts (failed logins, signups) per key in fixed windows: in Redis, shared by every
instance, or in this process's memory in the embedded default. The first attempt opens a window;
its count and the seconds left in it are what a throttle decides on."""

import hashlib
import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)


class RedisAttempts:
    def __init__(self, shard: dict, prefix: str) -> None:
        """`shard`: a spec of settings.REDIS_SHARDS (a URL, or a Sentinel-managed master)."""
        import redis
        from redis.sentinel import Sentinel

        # Short timeouts: a login page must answer even while Redis does not.
        timeouts = {"socket_timeout": 2, "socket_connect_timeout": 2}
        if "url" in shard:
            self.redis = redis.Redis.from_url(shard["url"], **timeouts)
        else:
            self.redis = Sentinel(shard["sentinels"], sentinel_kwargs=timeouts, **timeouts).master_for(
                shard["master_name"], db=shard["db"], password=shard["password"])
        self.prefix = prefix

    def add(self, key: str, window: float) -> tuple[int, float]:
        """Count one attempt; the count in the current window and the seconds left in it."""
        key = self.prefix + key
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=max(1, round(window)), nx=True)  # the first attempt opens the window
            pipe.incr(key)
            pipe.ttl(key)
            _, count, ttl = pipe.execute()
        return int(count), float(max(ttl, 0))

    def get(self, key: str) -> tuple[int, float]:
        key = self.prefix + key
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            count, ttl = pipe.execute()
        return (int(count), float(ttl)) if count is not None and ttl > 0 else (0, 0.0)

    def clear(self, key: str) -> None:
        self.redis.delete(self.prefix + key)


class MemoryAttempts:
    MAX_KEYS = 100_000  # past this, expired windows are dropped before a new one opens

    def __init__(self) -> None:
        self.windows: dict[str, tuple[int, float]] = {}  # key -> (count, monotonic end of the window)
        self.lock = threading.Lock()  # views run on threads of their own

    def add(self, key: str, window: float) -> tuple[int, float]:
        now = time.monotonic()
        with self.lock:
            count, ends = self.windows.get(key, (0, 0.0))
            if ends <= now:
                if len(self.windows) >= self.MAX_KEYS:
                    self.windows = {k: v for k, v in self.windows.items() if v[1] > now}
                count, ends = 0, now + window
            self.windows[key] = (count + 1, ends)
        return count + 1, ends - now

    def get(self, key: str) -> tuple[int, float]:
        count, ends = self.windows.get(key, (0, 0.0))
        now = time.monotonic()
        return (count, ends - now) if ends > now else (0, 0.0)

    def clear(self, key: str) -> None:
        with self.lock:
            self.windows.pop(key, None)


_stores: dict = {}


def attempts() -> RedisAttempts | MemoryAttempts:
    """This process's attempt counters (a sync Redis client is safe to share between threads)."""
    store = _stores.get("store")
    if store is None:
        if settings.REDIS_SHARDS:  # the first shard: a login is not a room's or a known user's
            store = RedisAttempts(settings.REDIS_SHARDS[0], f"{settings.CHAT_REDIS_PREFIX}:attempts:")
        else:
            store = MemoryAttempts()
        store = _stores.setdefault("store", store)
    return store


def attempt_key(kind: str, value: str) -> str:
    """A fixed-length key; the value (a username, an address) is not kept in clear."""
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"
