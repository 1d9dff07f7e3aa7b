"""Shared, fast room state: sequences, the send step, the recent-message buffer, presence and
rate limits. `RedisRoomState` is shared by every instance; `MemoryRoomState` serves the embedded
single-process default. `room_state()` returns the one this process uses.
"""

import asyncio
import functools
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass

import orjson
from django.conf import settings

from chat import protocol

HUB_GROUP = "hubs"  # every instance's hub listens here for user-wide events


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the atomic send step did: `status` is 'ok' (a new seq), 'dup' (client_id seen before),
    'limited' (the user's rate limit; see retry_after) or 'seed' (the room's counter is missing)."""

    status: str
    seq: int = 0
    message_id: str = ""
    retry_after: float = 0.0


@functools.lru_cache(maxsize=8)
def parse_rate(spec: str) -> tuple[int, float]:
    """'20/10s' -> (burst 20, 2.0 tokens per second)."""
    count, _, window = spec.partition("/")
    units = {"s": 1, "m": 60, "h": 3600}
    window = window.strip() or "1s"
    unit = window[-1] if window[-1] in units else "s"
    number = window[:-1] if window[-1] in units else window
    seconds = float(number or 1) * units[unit]
    return int(count), int(count) / seconds


def split_message_frame(message: dict) -> tuple[str, str]:
    """Encode a message frame around its seq so the seq can be filled in atomically where it is issued."""
    marker = -7_654_321_987  # a value no real seq takes
    text = protocol.encode(protocol.message_frame({**message, "seq": marker}))
    head, _, tail = text.partition(f'"seq":{marker}')
    return head + '"seq":', tail


# The send step as one atomic script, so the order of seqs in a room is the order of publishes:
# idempotency by client_id, the user's token bucket (on Redis's clock, shared by every instance
# and socket of the user), the room's next seq, the recent buffer, and the group publish in the
# channels-redis pub/sub wire format (a msgpack map on `<prefix>__group__<group>`). Each published
# message carries `prev`, the seq before it in the room ("-1" when the counter was just re-seeded),
# so an instance can tell when it missed one.
SEND_SCRIPT = """
local prev = redis.call('GET', KEYS[2])
if prev then return {'dup', prev} end
local cap = tonumber(ARGV[8])
local rate = tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[5], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or cap
local ts = tonumber(bucket[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
if tokens < 1 then return {'limited', tostring((1 - tokens) / rate)} end
local prev = redis.call('GET', KEYS[1])
if not prev then
  if ARGV[5] == '' then return {'seed', ''} end
  redis.call('SET', KEYS[1], ARGV[5])
  prev = '-1'
end
redis.call('HSET', KEYS[5], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[5], math.ceil(cap / rate) + 1)
redis.call('INCR', KEYS[1])
local seq = redis.call('GET', KEYS[1])  -- as a string: Lua would print a large number as a float
local text = ARGV[1] .. seq .. ARGV[2]
redis.call('SET', KEYS[2], ARGV[3] .. ':' .. seq, 'EX', tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], seq, text)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[6]) + 1))
redis.call('PUBLISH', KEYS[4], cmsgpack.pack({type='room.frame', room=ARGV[7], text=text, seq=seq, prev=prev}))
return {'ok', seq}
"""

REPLACE_SCRIPT = """
if redis.call('ZCOUNT', KEYS[1], ARGV[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: the room's online users, the user's connections. ARGV: username, conn_id, expiry, now, ttl.
PRESENCE_JOIN_SCRIPT = """
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
if was and tonumber(was) > tonumber(ARGV[4]) then return 0 end
return 1
"""

# KEYS as above. ARGV: username, conn_id, now. Returns 1 when the user has no live connection left.
PRESENCE_LEAVE_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

CLIENT_ID_TTL = 24 * 3600


class RedisRoomState:
    def __init__(self, url: str, prefix: str, layer_prefix: str) -> None:
        from redis import asyncio as aioredis

        # A blocking pool: a burst (thousands of sockets closing at once) waits for a connection
        # instead of failing with MaxConnectionsError, as the default pool does past its limit.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10, socket_timeout=5,
                                                        socket_connect_timeout=5, health_check_interval=30)
        self.redis = aioredis.Redis(connection_pool=pool)
        self.prefix = prefix
        self.layer_prefix = layer_prefix
        self._send = self.redis.register_script(SEND_SCRIPT)
        self._replace = self.redis.register_script(REPLACE_SCRIPT)
        self._presence_join = self.redis.register_script(PRESENCE_JOIN_SCRIPT)
        self._presence_leave = self.redis.register_script(PRESENCE_LEAVE_SCRIPT)

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    async def send(self, *, room_id: int, user_id: int, client_id: str, message: dict, seed: int | None,
                   rate: tuple[int, float]) -> SendOutcome:
        head, tail = split_message_frame(message)
        status, value = await self._send(
            keys=[
                self._key("seq", room_id),
                self._key("cid", room_id, user_id, client_id),
                self._key("recent", room_id),
                f"{self.layer_prefix}__group__{room_group(room_id)}",
                self._key("rate", user_id),
            ],
            args=[head, tail, message["id"], CLIENT_ID_TTL, "" if seed is None else seed,
                  settings.CHAT_RECENT_BUFFER, room_id, rate[0], rate[1]],
        )
        status, value = status.decode(), value.decode()
        if status == "dup":
            message_id, _, seq = value.partition(":")
            return SendOutcome("dup", int(seq), message_id)
        if status == "seed":
            return SendOutcome("seed")
        if status == "limited":
            return SendOutcome("limited", retry_after=round(float(value), 2))
        return SendOutcome("ok", int(value), message["id"])

    async def last_seq(self, room_id: int) -> int | None:
        value = await self.redis.get(self._key("seq", room_id))
        return None if value is None else int(value)

    async def recent(self, room_id: int, after: int) -> list[dict]:
        """Buffered message frames with seq > after (tombstones included), ascending."""
        rows = await self.redis.zrangebyscore(self._key("recent", room_id), f"({after}", "+inf")
        return [orjson.loads(row) for row in rows]

    async def replay_page(self, room_id: int, after: int, limit: int) -> tuple[list[dict], int | None]:
        """Up to `limit` buffered frames with seq > after (tombstones included), ascending, and the
        buffer's oldest seq (None when it is empty), read together."""
        key = self._key("recent", room_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.zrangebyscore(key, f"({after}", "+inf", start=0, num=limit)
            oldest, rows = await pipe.execute()
        return [orjson.loads(row) for row in rows], int(oldest[0][1]) if oldest else None

    async def recent_get(self, room_id: int, seq: int) -> dict | None:
        rows = await self.redis.zrangebyscore(self._key("recent", room_id), seq, seq)
        return orjson.loads(rows[0]) if rows else None

    async def recent_replace(self, room_id: int, seq: int, frame: dict) -> None:
        await self._replace(keys=[self._key("recent", room_id)], args=[seq, protocol.encode(frame)])

    # Presence is two levels, so reading who is online costs one entry per user, not per socket:
    # `presence:<room>` scores each online username by its latest expiry, and
    # `presence:<room>:<username>` scores that user's connections. Instances refresh their
    # connections' expiries; a crashed instance's entries run out on their own.

    async def presence_join(self, room_id: int, conn_id: str, username: str) -> bool:
        """Adds the connection; True when its user was not online in the room before."""
        expiry = time.time() + _ttl()
        return bool(await self._presence_join(keys=[self._key("presence", room_id),
                                                    self._key("presence", room_id, username)],
                                              args=[username, conn_id, expiry, time.time(), _ttl()]))

    async def presence_leave(self, room_id: int, conn_id: str, username: str) -> bool:
        """Removes the connection; True when that was the user's last one in the room."""
        return bool(await self._presence_leave(keys=[self._key("presence", room_id),
                                                     self._key("presence", room_id, username)],
                                               args=[username, conn_id, time.time()]))

    async def presence_refresh(self, entries: list[tuple[int, str, str]]) -> list[int]:
        """Extend this instance's connections and drop expired users; returns rooms that lost someone."""
        expiry, now = time.time() + _ttl(), time.time()
        rooms = sorted({room_id for room_id, _, _ in entries})
        async with self.redis.pipeline(transaction=False) as pipe:
            for room_id, conn_id, username in entries:
                # Not "xx": re-adding heals the sets after Redis restarts empty.
                user_key = self._key("presence", room_id, username)
                pipe.zadd(user_key, {conn_id: expiry})
                pipe.expire(user_key, _ttl())
                pipe.zadd(self._key("presence", room_id), {username: expiry}, gt=True)
            for room_id in rooms:
                pipe.zremrangebyscore(self._key("presence", room_id), "-inf", now)
            results = await pipe.execute()
        removed = results[3 * len(entries):]
        return [room_id for room_id, count in zip(rooms, removed, strict=True) if count]

    async def presence_online(self, room_id: int) -> list[str]:
        members = await self.redis.zrangebyscore(self._key("presence", room_id), time.time(), "+inf")
        return sorted(m.decode() for m in members)

    async def typing_allow(self, room_id: int, user_id: int, active: bool, every: float) -> bool:
        """At most one "typing" start per user and room every `every` seconds, across instances;
        a stop always goes out and lets the next start through at once."""
        key = self._key("typing", room_id, user_id)
        if not active:
            await self.redis.delete(key)
            return True
        return bool(await self.redis.set(key, 1, nx=True, px=int(every * 1000)))

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def server_id(self) -> str:
        """Changes when Redis restarts (and lost what it held)."""
        return (await self.redis.info("server"))["run_id"]


def _ttl() -> int:
    return settings.CHAT_PRESENCE_TTL


class MemoryRoomState:
    """The same operations in this process's memory, for the embedded single-process default."""

    def __init__(self) -> None:
        self.seqs: dict[int, int] = {}
        self.client_ids: dict[tuple, tuple[str, int]] = {}
        self.recent_frames: dict[int, dict[int, dict]] = defaultdict(dict)
        self.presence: dict[int, dict[str, tuple[str, float]]] = defaultdict(dict)
        self.buckets: dict[int, tuple[float, float]] = {}
        self.typing_until: dict[tuple[int, int], float] = {}
        self.lock = asyncio.Lock()

    async def send(self, *, room_id: int, user_id: int, client_id: str, message: dict, seed: int | None,
                   rate: tuple[int, float]) -> SendOutcome:
        from channels.layers import get_channel_layer

        # The lock keeps "take a seq" and "publish" together, so publishes go out in seq order.
        async with self.lock:
            previous = self.client_ids.get((room_id, user_id, client_id))
            if previous:
                return SendOutcome("dup", previous[1], previous[0])
            burst, per_second = rate
            now = time.monotonic()
            tokens, stamp = self.buckets.get(user_id, (burst, now))
            tokens = min(burst, tokens + (now - stamp) * per_second)
            if tokens < 1:
                return SendOutcome("limited", retry_after=round((1 - tokens) / per_second, 2))
            prev = self.seqs.get(room_id)
            if prev is None:
                if seed is None:
                    return SendOutcome("seed")
                self.seqs[room_id], prev = seed, -1
            self.buckets[user_id] = (tokens - 1, now)
            self.seqs[room_id] += 1
            seq = self.seqs[room_id]
            self.client_ids[(room_id, user_id, client_id)] = (message["id"], seq)
            frame = protocol.message_frame({**message, "seq": seq})
            buffer = self.recent_frames[room_id]
            buffer[seq] = frame
            for old in itertools.islice(sorted(buffer), max(0, len(buffer) - settings.CHAT_RECENT_BUFFER)):
                del buffer[old]
            await get_channel_layer().group_send(
                room_group(room_id), {"type": "room.frame", "room": room_id, "text": protocol.encode(frame), "seq": seq,
                                     "prev": prev}
            )
        return SendOutcome("ok", seq, message["id"])

    async def last_seq(self, room_id: int) -> int | None:
        return self.seqs.get(room_id)

    async def recent(self, room_id: int, after: int) -> list[dict]:
        buffer = self.recent_frames.get(room_id, {})
        return [buffer[seq] for seq in sorted(buffer) if seq > after]

    async def replay_page(self, room_id: int, after: int, limit: int) -> tuple[list[dict], int | None]:
        buffer = self.recent_frames.get(room_id, {})
        seqs = sorted(buffer)
        return [buffer[seq] for seq in seqs if seq > after][:limit], seqs[0] if seqs else None

    async def recent_get(self, room_id: int, seq: int) -> dict | None:
        return self.recent_frames.get(room_id, {}).get(seq)

    async def recent_replace(self, room_id: int, seq: int, frame: dict) -> None:
        if seq in self.recent_frames.get(room_id, {}):
            self.recent_frames[room_id][seq] = frame

    async def presence_join(self, room_id: int, conn_id: str, username: str) -> bool:
        was_online = username in await self.presence_online(room_id)
        self.presence[room_id][conn_id] = (username, time.time() + _ttl())
        return not was_online

    async def presence_leave(self, room_id: int, conn_id: str, username: str) -> bool:
        self.presence[room_id].pop(conn_id, None)
        return username not in await self.presence_online(room_id)

    async def presence_refresh(self, entries: list[tuple[int, str, str]]) -> list[int]:
        for room_id, conn_id, username in entries:
            self.presence[room_id][conn_id] = (username, time.time() + _ttl())
        return []

    async def presence_online(self, room_id: int) -> list[str]:
        now = time.time()
        return sorted({name for name, expiry in self.presence[room_id].values() if expiry > now})

    async def typing_allow(self, room_id: int, user_id: int, active: bool, every: float) -> bool:
        key, now = (room_id, user_id), time.monotonic()
        if not active:
            self.typing_until.pop(key, None)
            return True
        if self.typing_until.get(key, 0) > now:
            return False
        self.typing_until[key] = now + every
        return True

    async def server_id(self) -> str:
        return "memory"

    async def ping(self) -> bool:
        return True


_states: dict = {}


def room_state() -> RedisRoomState | MemoryRoomState:
    """This process's room state; a Redis client belongs to one event loop, so one per loop."""
    if not settings.REDIS_URL:
        return _states.setdefault("memory", MemoryRoomState())
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        layer_prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        state = _states[loop] = RedisRoomState(settings.REDIS_URL, settings.CHAT_REDIS_PREFIX, layer_prefix)
    return state
