"""Shared, fast room state: sequences, the send step, the recent-message buffer and its id index,
presence and typing; per-user limits beside it (chat/limits.py). `RedisRoomState` is shared by every
instance; `MemoryRoomState` serves the embedded single-process default. `room_state()` returns the
one this process uses.
"""

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass

import orjson
from django.conf import settings

from chat import protocol
from chat.limits import BUCKET_LUA, MemoryLimits, RedisLimits, retry_after

HUB_GROUP = "hubs"  # every instance's hub listens here for user-wide events


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the atomic send step did: `status` is 'ok' (a new seq), 'dup' (client_id seen before;
    `acked` once Kafka took that message), 'limited' (the user's rate limit; see retry_after) or
    'seed' (the room's counter is missing)."""

    status: str
    seq: int = 0
    message_id: str = ""
    retry_after: float = 0.0
    acked: bool = False


def split_message_frame(message: dict) -> tuple[str, str]:
    """Encode a message frame around its seq so the seq can be filled in atomically where it is issued."""
    marker = -7_654_321_987  # a value no real seq takes
    text = protocol.encode(protocol.message_frame({**message, "seq": marker}))
    head, _, tail = text.partition(f'"seq":{marker}')
    return head + '"seq":', tail


# The send step as one atomic script, so the order of seqs in a room is the order of publishes:
# the user's token bucket (on Redis's clock, shared by every instance and socket of the user; a
# retried client_id costs a token too), idempotency by client_id, the room's next seq, the recent
# buffer and its id index (trimmed together), and the group publish in the channels-redis pub/sub
# wire format (a msgpack map on `<prefix>__group__<group>`). Each published message carries `prev`,
# the seq before it in the room ("-1" when the counter was just re-seeded), so an instance can tell
# when it missed one.
SEND_SCRIPT = BUCKET_LUA + """
local entry = redis.call('GET', KEYS[2])
local prev = redis.call('GET', KEYS[1])
if not entry and not prev and ARGV[5] == '' then return {'seed', ''} end
local wait = bucket_take(KEYS[5], tonumber(ARGV[8]), tonumber(ARGV[9]))
if wait > 0 then return {'limited', tostring(wait)} end
if entry then return {'dup', entry} end
if not prev then
  redis.call('SET', KEYS[1], ARGV[5])
  prev = '-1'
end
redis.call('INCR', KEYS[1])
local seq = redis.call('GET', KEYS[1])  -- as a string: Lua would print a large number as a float
local text = ARGV[1] .. seq .. ARGV[2]
local keep = -(tonumber(ARGV[6]) + 1)
redis.call('SET', KEYS[2], ARGV[3] .. ':' .. seq, 'EX', tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], seq, text)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, keep)
redis.call('ZADD', KEYS[6], seq, ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, keep)
redis.call('PUBLISH', KEYS[4], cmsgpack.pack({type='room.frame', room=ARGV[7], text=text, seq=seq, prev=prev}))
return {'ok', seq}
"""

# KEYS: the room's id index, its recent buffer. ARGV: the message id. The buffered frame, if any.
FIND_SCRIPT = """
local seq = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seq then return false end
local rows = redis.call('ZRANGEBYSCORE', KEYS[2], seq, seq)
return rows[1] or false
"""

# KEYS: the user's typing state in the room. ARGV: 1 for a start or 0 for a stop, the throttle (ms).
# At most one start and one stop relayed per throttle, and a stop only after a relayed start.
TYPING_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local every = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'start', 'stop', 'shown')
if ARGV[1] == '1' then
  if state[1] and now - tonumber(state[1]) < every then return 0 end
  redis.call('HSET', KEYS[1], 'start', now, 'shown', 1)
else
  if state[3] ~= '1' or (state[2] and now - tonumber(state[2]) < every) then return 0 end
  redis.call('HSET', KEYS[1], 'stop', now, 'shown', 0)
end
redis.call('PEXPIRE', KEYS[1], every + 60000)
return 1
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
        self._find = self.redis.register_script(FIND_SCRIPT)
        self._typing = self.redis.register_script(TYPING_SCRIPT)
        self._replace = self.redis.register_script(REPLACE_SCRIPT)
        self._presence_join = self.redis.register_script(PRESENCE_JOIN_SCRIPT)
        self._presence_leave = self.redis.register_script(PRESENCE_LEAVE_SCRIPT)
        self.limits = RedisLimits(self.redis, self._key)

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
                self._key("rate", "send", user_id),
                self._key("ids", room_id),
            ],
            args=[head, tail, message["id"], CLIENT_ID_TTL, "" if seed is None else seed,
                  settings.CHAT_RECENT_BUFFER, room_id, rate[0], rate[1]],
        )
        status, value = status.decode(), value.decode()
        if status == "dup":
            message_id, seq, *acked = value.split(":")
            return SendOutcome("dup", int(seq), message_id, acked=bool(acked))
        if status == "seed":
            return SendOutcome("seed")
        if status == "limited":
            return SendOutcome("limited", retry_after=retry_after(float(value)))
        return SendOutcome("ok", int(value), message["id"])

    async def send_acked(self, *, room_id: int, user_id: int, client_id: str, message_id: str, seq: int) -> None:
        """Kafka has the message: a retry of its client_id is answered without enqueuing it again."""
        await self.redis.set(self._key("cid", room_id, user_id, client_id), f"{message_id}:{seq}:acked", xx=True,
                             keepttl=True)

    async def last_seq(self, room_id: int) -> int | None:
        value = await self.redis.get(self._key("seq", room_id))
        return None if value is None else int(value)

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

    async def recent_find(self, room_id: int, message_id: str) -> dict | None:
        """The buffered frame (or tombstone) of a message, found through the buffer's id index."""
        row = await self._find(keys=[self._key("ids", room_id), self._key("recent", room_id)], args=[message_id])
        return orjson.loads(row) if row else None

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
        """Whether to relay this "typing": at most one start and one stop per user and room every
        `every` seconds across instances, and a stop only after a relayed start."""
        return bool(await self._typing(keys=[self._key("typing", room_id, user_id)],
                                       args=[1 if active else 0, int(every * 1000)]))

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
        self.client_ids: dict[tuple, tuple[str, int, bool]] = {}  # -> (message id, seq, acked)
        self.recent_frames: dict[int, dict[int, dict]] = defaultdict(dict)
        self.recent_ids: dict[int, dict[str, int]] = defaultdict(dict)
        self.presence: dict[int, dict[str, tuple[str, float]]] = defaultdict(dict)
        self.typing: dict[tuple[int, int], tuple[float, float, bool]] = {}  # -> (last start, last stop, shown)
        self.limits = MemoryLimits()
        self.lock = asyncio.Lock()

    async def send(self, *, room_id: int, user_id: int, client_id: str, message: dict, seed: int | None,
                   rate: tuple[int, float]) -> SendOutcome:
        from channels.layers import get_channel_layer

        # The lock keeps "take a seq" and "publish" together, so publishes go out in seq order.
        async with self.lock:
            previous = self.client_ids.get((room_id, user_id, client_id))
            prev = self.seqs.get(room_id)
            if previous is None and prev is None and seed is None:
                return SendOutcome("seed")
            wait = self.limits.take_now(("send", user_id), rate)
            if wait:
                return SendOutcome("limited", retry_after=wait)
            if previous:
                return SendOutcome("dup", previous[1], previous[0], acked=previous[2])
            if prev is None:
                self.seqs[room_id], prev = seed, -1
            self.seqs[room_id] += 1
            seq = self.seqs[room_id]
            self.client_ids[(room_id, user_id, client_id)] = (message["id"], seq, False)
            frame = protocol.message_frame({**message, "seq": seq})
            buffer, ids = self.recent_frames[room_id], self.recent_ids[room_id]
            buffer[seq], ids[message["id"]] = frame, seq
            for old in itertools.islice(sorted(buffer), max(0, len(buffer) - settings.CHAT_RECENT_BUFFER)):
                ids.pop(buffer.pop(old)["id"], None)
            await get_channel_layer().group_send(
                room_group(room_id), {"type": "room.frame", "room": room_id, "text": protocol.encode(frame), "seq": seq,
                                     "prev": prev}
            )
        return SendOutcome("ok", seq, message["id"])

    async def send_acked(self, *, room_id: int, user_id: int, client_id: str, message_id: str, seq: int) -> None:
        if (room_id, user_id, client_id) in self.client_ids:
            self.client_ids[(room_id, user_id, client_id)] = (message_id, seq, True)

    async def last_seq(self, room_id: int) -> int | None:
        return self.seqs.get(room_id)

    async def replay_page(self, room_id: int, after: int, limit: int) -> tuple[list[dict], int | None]:
        buffer = self.recent_frames.get(room_id, {})
        seqs = sorted(buffer)
        return [buffer[seq] for seq in seqs if seq > after][:limit], seqs[0] if seqs else None

    async def recent_get(self, room_id: int, seq: int) -> dict | None:
        return self.recent_frames.get(room_id, {}).get(seq)

    async def recent_find(self, room_id: int, message_id: str) -> dict | None:
        seq = self.recent_ids.get(room_id, {}).get(message_id)
        return None if seq is None else await self.recent_get(room_id, seq)

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
        now = time.monotonic()
        start, stop, shown = self.typing.get((room_id, user_id), (-every, -every, False))
        if active and now - start >= every:
            self.typing[(room_id, user_id)] = (now, stop, True)
            return True
        if not active and shown and now - stop >= every:
            self.typing[(room_id, user_id)] = (start, now, False)
            return True
        return False

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
