"""Shared, fast room state: sequences, the send step, the recent-message buffer and its id index,
presence (chat/roompresence.py), typing and each room's publishes; per-user limits beside it (chat/limits.py).
`RedisRoomState` is shared by every instance, each room on the shard of its partition
(chat/shards.py); `MemoryRoomState` serves the embedded single-process default. `room_state()`
returns the one this process uses.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack
import orjson
from django.conf import settings

from chat import idempotency, protocol
from chat.batching import PipelineBatch
from chat.limits import RedisLimits
from chat.roompresence import RedisPresence
from chat.roomscripts import (
    ACK_SCRIPT,
    CHANGE_SCRIPT,
    CURRENT_SCRIPT,
    IDENTITY_SCRIPT,
    PRESENCE_JOIN_SCRIPT,
    PRESENCE_LEAVE_SCRIPT,
    PRESENCE_PUBLISH_SCRIPT,
    PRESENCE_REFRESH_SCRIPT,
    REPLAY_SCRIPT,
    RESTORE_SCRIPT,
    SEND_SCRIPT,
    TYPING_SCRIPT,
)
from chat.shards import hash_tag, partition_of, shard_client, shard_name, shard_of

if TYPE_CHECKING:
    from chat.memorystate import MemoryRoomState

logger = logging.getLogger(__name__)

HUB_GROUP = "hubs"  # every instance's hub listens here for user-wide events


def room_group(room_id: int) -> str:
    """The room's group: the hash tag of its partition, so its channel sits on its shard's slot."""
    return f"room.{hash_tag(partition_of(room_id))}.{room_id}"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the room's atomic send step did: `status` is 'ok' (a new seq), 'dup' (client_id seen
    before; `acked` once Kafka took that message), 'seed' (the room's counter is missing) or
    'limited' (the user's send bucket, taken in the step, is empty)."""

    status: str
    seq: int = 0
    message_id: str = ""
    acked: bool = False
    wait: float = 0.0  # 'limited': seconds until the user's send bucket has a token


def split_message_frame(message: dict) -> tuple[str, str]:
    """Encode a message frame around its seq so the seq can be filled in atomically where it is issued."""
    marker = -7_654_321_987  # a value no real seq takes
    text = protocol.encode(protocol.message_frame({**message, "seq": marker}))
    head, _, tail = text.partition(f'"seq":{marker}')
    return head + '"seq":', tail


class ShardChangedHands(ConnectionError):
    """A shard kept refusing a write for its identity (another master or deployment each time): try again."""


DEPLOYMENT_RELOAD_SECONDS = 60  # how soon a renewed deployment identity (after a restore) is used


class RedisShard:
    """One shard's client, and the scripts bound to it."""

    def __init__(self, spec: dict) -> None:
        self.name = shard_name(spec)
        self.redis = shard_client(spec)
        self.events = shard_client(spec, reconnect=False)  # the room feed's pub/sub (chat/roomfeed.py)
        self.send = self.redis.register_script(SEND_SCRIPT)
        self.ack = self.redis.register_script(ACK_SCRIPT)
        self.restore = self.redis.register_script(RESTORE_SCRIPT)
        self.identity = self.redis.register_script(IDENTITY_SCRIPT)
        self.current = self.redis.register_script(CURRENT_SCRIPT)
        self.change = self.redis.register_script(CHANGE_SCRIPT)
        self.typing = self.redis.register_script(TYPING_SCRIPT)
        # A storm's joins, leaves and replays come hundreds at a time: one pipeline a batch
        # (chat/batching.py).
        batch = PipelineBatch(self.redis)
        self.replay = batch.script(self.redis.register_script(REPLAY_SCRIPT))
        self.presence_join = batch.script(self.redis.register_script(PRESENCE_JOIN_SCRIPT))
        self.presence_leave = batch.script(self.redis.register_script(PRESENCE_LEAVE_SCRIPT))
        self.presence_refresh = self.redis.register_script(PRESENCE_REFRESH_SCRIPT)
        self.presence_publish = self.redis.register_script(PRESENCE_PUBLISH_SCRIPT)


class RedisRoomState(RedisPresence):
    """Room state over the shards of REDIS_URLS: each room's keys, scripts and publishes on the
    shard of its partition (chat/shards.py), each user's limits on the user's."""

    def __init__(self, shards: list[dict], prefix: str, layer_prefix: str) -> None:
        self.shards = [RedisShard(spec) for spec in shards]
        self.prefix = prefix
        self.layer_prefix = layer_prefix
        self.limits = RedisLimits(self._user)
        self.identity_key = f"{prefix}:shard:identity"  # one per shard, beside its rooms
        self._deployment: tuple[str, float] | None = None

    async def deployment(self) -> str:
        """This database's deployment identity (Postgres), reloaded now and then."""
        if self._deployment is None or time.monotonic() - self._deployment[1] > DEPLOYMENT_RELOAD_SECONDS:
            from channels.db import database_sync_to_async

            from chat.services.rooms import deployment_identity

            self._deployment = (await database_sync_to_async(deployment_identity)(), time.monotonic())
        return self._deployment[0]

    async def _renew_identity(self, shard: RedisShard, deployment: str) -> None:
        """The shard's state is another deployment's or was written on another master (a failover,
        a restart): a new generation, so every room there starts a new epoch on its next send."""
        generation = uuid.uuid4().hex
        taken = (await shard.identity(keys=[self.identity_key], args=[deployment, generation])).decode()
        if taken == generation:
            logger.warning("Redis shard %s: its state is not this deployment's or its master changed (failover"
                           " or restart); its rooms start new epochs (generation %s)", shard.name, generation)

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    def shard_index(self, room_id: int) -> int:
        return shard_of(partition_of(room_id), len(self.shards))

    def _room(self, room_id: int) -> tuple[RedisShard, str]:
        """The room's shard and the start of its keys, which carry its partition's hash tag."""
        partition = partition_of(room_id)
        return (self.shards[shard_of(partition, len(self.shards))],
                f"{self.prefix}:{hash_tag(partition)}:room:{room_id}")

    def _user(self, user_id: int) -> tuple[object, str]:
        partition = partition_of(user_id)
        return (self.shards[shard_of(partition, len(self.shards))].redis,
                f"{self.prefix}:{hash_tag(partition)}:user:{user_id}")

    def room_channel(self, room_id: int) -> str:
        """The channel the room's events are published on, on its shard (the channels-redis name
        of the room's group, so the layer's group_send reaches it too when the layer has one host)."""
        return f"{self.layer_prefix}__group__{room_group(room_id)}"

    async def publish(self, room_id: int, event: dict) -> None:
        shard, _ = self._room(room_id)
        await shard.redis.publish(self.room_channel(room_id), msgpack.packb(event, use_bin_type=True))

    def bucket_in_send(self, *, user_id: int, room_id: int) -> bool:
        """Whether the user's send bucket sits on the room's shard, so `send` takes it in its step."""
        return self._user(user_id)[0] is self._room(room_id)[0].redis

    async def send(self, *, room_id: int, user_id: int, client_id: str, message: dict, seed: int | None,
                   rate: tuple[int, float] | None = None) -> SendOutcome:
        """The room's step of a send; with `rate`, it takes a token from the user's send bucket first
        (bucket_in_send; else the caller took it, on the user's shard)."""
        shard, _ = self._room(room_id)
        deployment = await self.deployment()

        async def attempt():
            status, value = await shard.send(**self._send_call(room_id, user_id, client_id, message, seed, rate,
                                                               deployment))
            return None if status == b"identity" else (status, value)

        status, value = await self._claimed(shard, deployment, attempt, "the send")
        return self._send_outcome(shard, status, value, message)

    async def send_many(self, sends: list[dict], *, rate: tuple[int, float]) -> list[SendOutcome | Exception]:
        """Several sends to one room (send's arguments, without seed), their steps in one transaction:
        Redis runs them in this order with no other client's step between them, so their seqs follow
        it and they all see the room at one moment (if one needs a seed, they all do: another
        sender's seed between them would sequence the later ones before the earlier). Each one's
        outcome, or the error of one the shard's identity kept refusing (those before it stand)."""
        shard, _ = self._room(sends[0]["room_id"])
        deployment = await self.deployment()
        outcomes: list[SendOutcome | Exception] = []

        async def attempt():
            pending = sends[len(outcomes):]
            async with shard.redis.pipeline(transaction=True) as pipe:
                for send in pending:
                    await shard.send(**self._send_call(**send, seed=None, rate=rate, deployment=deployment),
                                     client=pipe)
                replies = await pipe.execute()
            for send, (status, value) in zip(pending, replies, strict=True):
                if status == b"identity":  # this one and those after it go again
                    return None
                outcomes.append(self._send_outcome(shard, status, value, send["message"]))
            return outcomes

        try:
            return await self._claimed(shard, deployment, attempt, "the send")
        except ShardChangedHands as refused:
            return outcomes + [refused] * (len(sends) - len(outcomes))

    async def _claimed(self, shard: RedisShard, deployment: str, attempt, what: str):
        """`attempt()`'s result once the shard stops refusing it for its identity (None: refused,
        the shard changed hands since this process last wrote there), renewing the identity between
        tries; ShardChangedHands after three refusals."""
        for _ in range(3):
            result = await attempt()
            if result is not None:
                return result
            await self._renew_identity(shard, deployment)
        raise ShardChangedHands(f"Redis shard {shard.name} changed hands during {what}; try again")

    def _send_call(self, room_id: int, user_id: int, client_id: str, message: dict, seed: int | None,
                   rate: tuple[int, float] | None, deployment: str) -> dict:
        _, room = self._room(room_id)
        head, tail = split_message_frame(message)
        field, pick = idempotency.entry_digest(user_id, client_id)
        return dict(
            keys=[f"{room}:meta", f"{room}:cidx", f"{room}:recent", self.room_channel(room_id),
                  f"{room}:ids", self.identity_key, f"{self._user(user_id)[1]}:rate:send"],
            args=[head, tail, message["id"], idempotency.entry_value(message["id"], ""),
                  "" if seed is None else seed, settings.CHAT_RECENT_BUFFER, room_id, deployment,
                  f"{room}:cid:", field, pick, idempotency.bucket_seconds(), idempotency.window_seconds(),
                  settings.CHAT_ROOM_IDLE_SECONDS, *(rate if rate else ("", ""))])

    @staticmethod
    def _send_outcome(shard: RedisShard, status: bytes, value, message: dict) -> SendOutcome:
        status = status.decode()
        if status == "dup":
            entry = idempotency.entry_parse(value)
            return SendOutcome("dup", entry.seq, entry.message_id, acked=entry.acked)
        if status == "seed":
            return SendOutcome("seed")
        if status == "limited":
            return SendOutcome("limited", wait=float(value))
        if status != "ok":
            raise ConnectionError(f"Redis shard {shard.name} changed hands during the send; try again")
        return SendOutcome("ok", int(value), message["id"])

    async def send_acked(self, *, room_id: int, user_id: int, client_id: str, message_id: str, seq: int) -> None:
        """Kafka has the message: a retry of its client_id is answered without enqueuing it again."""
        shard, room = self._room(room_id)
        field, pick = idempotency.entry_digest(user_id, client_id)
        await shard.ack(keys=[f"{room}:cidx"], args=[f"{room}:cid:", field, pick, idempotency.bucket_seconds(),
                                                      idempotency.window_seconds()])

    async def client_ids_restore(self, *, room_id: int, entries: list[tuple[int, str, str, int]]) -> None:
        """Put back the idempotency entries of stored messages, (author id, client_id, id, seq) each."""
        shard, room = self._room(room_id)
        for start in range(0, len(entries), 500):
            args: list = [f"{room}:cid:", idempotency.bucket_seconds(), idempotency.window_seconds()]
            for user_id, client_id, message_id, seq in entries[start:start + 500]:
                field, pick = idempotency.entry_digest(user_id, client_id)
                args += [field, pick, idempotency.entry_value(message_id, seq) + b"a"]
            await shard.restore(keys=[f"{room}:cidx"], args=args)

    async def last_seq(self, room_id: int) -> int | None:
        shard, room = self._room(room_id)
        value = await shard.redis.hget(f"{room}:meta", "seq")
        return None if value is None else int(value)

    async def replay_page(self, room_id: int, after: int, limit: int) -> tuple[list[dict], int | None]:
        """Up to `limit` buffered frames with seq > after (tombstones included), ascending, and the
        seq from which the buffer holds every message (None when it cannot say), read together. An
        empty buffer of a room that went quiet holds every message after the room's last seq."""
        shard, room = self._room(room_id)
        rows, oldest, last = await shard.replay(keys=[f"{room}:recent", f"{room}:meta", self.identity_key],
                                                args=[after, limit, await self.deployment()])
        if oldest:
            return [orjson.loads(row) for row in rows], int(float(oldest))
        return [], int(last) + 1 if last else None

    async def recent_get(self, room_id: int, seq: int) -> dict | None:
        shard, room = self._room(room_id)
        rows = await shard.redis.zrangebyscore(f"{room}:recent", seq, seq)
        return orjson.loads(rows[0]) if rows else None

    async def message_current(self, room_id: int, message_id: str) -> dict | None:
        """The message's frame (or tombstone) as Redis holds it: buffered, or changed while the room is live."""
        _, row = await self._message_script("current", room_id, [message_id])
        return orjson.loads(row) if row else None

    async def message_change(self, room_id: int, frame: dict, *, from_rev: int, live: dict | None) -> dict | None:
        """Store the message's new frame if its state is still at `from_rev`, and publish `live` to the
        room with it; else the current frame."""
        status, row = await self._message_script(
            "change", room_id, [frame["id"]],
            [from_rev, protocol.encode(frame), settings.CHAT_ROOM_IDLE_SECONDS,
             protocol.encode(live) if live is not None else "", room_id], channel=True)
        return None if status == b"ok" else orjson.loads(row)

    async def _message_script(self, name: str, room_id: int, head: list, tail: list = (),
                              channel: bool = False) -> tuple[bytes, bytes]:
        shard, room = self._room(room_id)
        deployment = await self.deployment()
        keys = [f"{room}:ids", f"{room}:recent", f"{room}:meta", self.identity_key]
        if channel:
            keys.append(self.room_channel(room_id))

        async def attempt():
            status, row = await getattr(shard, name)(keys=keys, args=[*head, deployment, f"{room}:changed:", *tail])
            return None if status == b"identity" else (status, row)

        return await self._claimed(shard, deployment, attempt, "a message change")

    async def typing_allow(self, room_id: int, user_id: int, active: bool, every: float) -> bool:
        """Whether to relay this "typing": at most one start and one stop per user and room every
        `every` seconds across instances, and a stop only after a relayed start."""
        shard, room = self._room(room_id)
        return bool(await shard.typing(keys=[f"{room}:typing:{user_id}"], args=[1 if active else 0, int(every * 1000)]))

    async def ping(self, timeout: float = 5.0) -> dict[str, str]:
        """Each shard's answer, by name: 'ok' or why not."""
        results = await asyncio.gather(*(asyncio.wait_for(shard.redis.ping(), timeout) for shard in self.shards),
                                       return_exceptions=True)
        return {shard.name: "ok" if result is True else type(result).__name__
                for shard, result in zip(self.shards, results, strict=True)}

    async def server_ids(self) -> list[str | None]:
        """Per shard, an id that changes when its Redis restarts (and lost what it held) or another
        takes its place; None when the shard does not answer."""
        results = await asyncio.gather(*(shard.redis.info("server") for shard in self.shards),
                                       return_exceptions=True)
        return [None if isinstance(r, BaseException) else r["run_id"] for r in results]


_states: dict = {}


def room_state() -> "RedisRoomState | MemoryRoomState":
    """This process's room state; a Redis client belongs to one event loop, so one per loop."""
    if not settings.REDIS_SHARDS:
        from chat.memorystate import MemoryRoomState

        return _states.setdefault("memory", MemoryRoomState())
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        layer_prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        state = _states[loop] = RedisRoomState(settings.REDIS_SHARDS, settings.CHAT_REDIS_PREFIX, layer_prefix)
    return state
