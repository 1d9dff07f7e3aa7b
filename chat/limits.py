"""Per-user limits shared by every instance: a token bucket per kind of frame that costs the server,
and the count of a user's open sockets. `RedisLimits` keeps them in Redis (buckets on Redis's
clock, so every socket of a user on every instance draws on the same one); `MemoryLimits` in this
process, for the embedded default. Each room state holds one (`room_state().limits`); a user's
state lives on the user's shard, so it is checked in a step of its own before a room's script.
"""

import asyncio
import functools
import time
from collections import defaultdict
from collections.abc import Callable

from chat.batching import PipelineBatch

# The token bucket: refill at `rate` tokens a second up to `cap`, take one; 0, or the seconds
# until one is there (on Redis's clock, shared by every instance).
BUCKET_LUA = """
local function bucket_take(key, cap, rate)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1]) or cap
  local ts = tonumber(bucket[2]) or now
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  if tokens < 1 then return (1 - tokens) / rate end
  redis.call('HSET', key, 'tokens', tostring(tokens - 1), 'ts', tostring(now))
  redis.call('EXPIRE', key, math.ceil(cap / rate) + 1)
  return 0
end
"""

TAKE_SCRIPT = BUCKET_LUA + """
return tostring(bucket_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])))
"""

# KEYS: the user's sockets (conn_id scored by expiry). ARGV: conn_id, now, expiry, cap, ttl.
SOCKET_OPEN_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


# KEYS: one user's socket set per socket. ARGV: expiry, ttl, then each socket's id. A socket closed
# since is not added back (XX); one script call for a thousand sockets instead of two commands each.
SOCKETS_REFRESH_SCRIPT = """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[2 + i])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return #KEYS
"""

# Sockets per refresh call: the script holds its shard for about a millisecond a thousand.
REFRESH_CHUNK = 1000


def retry_after(wait: float) -> float:
    """Seconds until a token, as clients are told it: never 0 for a frame that was refused."""
    return max(0.01, round(wait, 2)) if wait > 0 else 0.0


@functools.lru_cache(maxsize=16)
def parse_rate(spec: str) -> tuple[int, float]:
    """'20/10s' -> (burst 20, 2.0 tokens per second)."""
    count, _, window = spec.partition("/")
    units = {"s": 1, "m": 60, "h": 3600}
    window = window.strip() or "1s"
    unit = window[-1] if window[-1] in units else "s"
    number = window[:-1] if window[-1] in units else window
    seconds = float(number or 1) * units[unit]
    return int(count), int(count) / seconds


class RedisLimits:
    """A user's buckets and sockets on the user's shard (`route`: user id -> its shard's client and
    the start of its keys), each in a step of its own before any room's script."""

    def __init__(self, route: Callable[[int], tuple[object, str]]) -> None:
        self._route = route
        self._scripts: dict[int, tuple] = {}

    def _user(self, user_id: int):
        redis, base = self._route(user_id)
        scripts = self._scripts.get(id(redis))
        if scripts is None:
            # A storm's joins count their sockets hundreds at a time: one pipeline a batch.
            scripts = self._scripts[id(redis)] = (redis.register_script(TAKE_SCRIPT),
                                                  PipelineBatch(redis).script(redis.register_script(SOCKET_OPEN_SCRIPT)),
                                                  redis.register_script(SOCKETS_REFRESH_SCRIPT))
        return redis, base, scripts

    async def take(self, user_id: int, kind: str, rate: tuple[int, float]) -> float:
        """Take a token from the user's bucket for `kind`: 0, or the seconds until there is one."""
        _, base, (take, _, _) = self._user(user_id)
        wait = await take(keys=[f"{base}:rate:{kind}"], args=[rate[0], rate[1]])
        return retry_after(float(wait))

    async def socket_open(self, user_id: int, conn_id: str, cap: int, ttl: int) -> bool:
        """Count the socket among the user's open ones, unless `cap` are open already."""
        _, base, (_, socket_open, _) = self._user(user_id)
        now = time.time()
        return bool(await socket_open(keys=[f"{base}:sockets"], args=[conn_id, now, now + ttl, cap, ttl]))

    async def socket_close(self, user_id: int, conn_id: str) -> None:
        redis, base, _ = self._user(user_id)
        await redis.zrem(f"{base}:sockets", conn_id)

    async def sockets_refresh(self, entries: list[tuple[int, str]], ttl: int) -> None:
        """Extend this instance's sockets (user_id, conn_id): a crashed instance's run out on their
        own. Shard by shard side by side; one that does not answer leaves the others refreshed."""
        expiry = time.time() + ttl
        by_client: dict[int, tuple[object, list[str], list[str]]] = {}
        for user_id, conn_id in entries:
            redis, base, scripts = self._user(user_id)
            _, keys, conn_ids = by_client.setdefault(id(redis), (scripts[2], [], []))
            keys.append(f"{base}:sockets")
            conn_ids.append(conn_id)

        async def refresh(script, keys: list[str], conn_ids: list[str]) -> None:
            for start in range(0, len(keys), REFRESH_CHUNK):
                await script(keys=keys[start:start + REFRESH_CHUNK],
                             args=[expiry, ttl, *conn_ids[start:start + REFRESH_CHUNK]])

        results = await asyncio.gather(*(refresh(*group) for group in by_client.values()), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure


class MemoryLimits:
    """The same limits in this process's memory, for the embedded single-process default."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, int], tuple[float, float]] = {}
        self.sockets: dict[int, set[str]] = defaultdict(set)

    def take_now(self, key: tuple[str, int], rate: tuple[int, float]) -> float:
        burst, per_second = rate
        now = time.monotonic()
        tokens, stamp = self.buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - stamp) * per_second)
        if tokens < 1:
            return retry_after((1 - tokens) / per_second)
        self.buckets[key] = (tokens - 1, now)
        return 0.0

    async def take(self, user_id: int, kind: str, rate: tuple[int, float]) -> float:
        return self.take_now((kind, user_id), rate)

    async def socket_open(self, user_id: int, conn_id: str, cap: int, ttl: int) -> bool:
        open_now = self.sockets[user_id]
        if len(open_now) >= cap:
            return False
        open_now.add(conn_id)
        return True

    async def socket_close(self, user_id: int, conn_id: str) -> None:
        self.sockets[user_id].discard(conn_id)

    async def sockets_refresh(self, entries: list[tuple[int, str]], ttl: int) -> None:
        """One process: a socket leaves this count when it closes, so nothing expires."""
