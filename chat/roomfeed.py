"""The hub's subscriptions to rooms' events: one feed per shard, subscribed on that shard to the
channels of the rooms this process has sockets in (redis-py pub/sub, one connection per shard).
The embedded default's feed takes the memory state's publishes directly."""

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgpack

logger = logging.getLogger(__name__)


def room_frame_event(room_id: int, text: str, seq: int | None = None, **extra) -> dict:
    """The event a room's hubs hand to its sockets (chat.hub): a frame's text, with `seq` only for a
    message, which the sockets check for duplicates and gaps (the send script builds its own)."""
    return {"type": "room.frame", "room": room_id, "text": text, "seq": seq, **extra}


class RedisRoomFeed:
    """One shard's pub/sub connection. `on_event` gets each event; `on_lost` is called when the
    connection failed, since events published meanwhile never arrive (redis-py reconnects and
    subscribes again on the next read)."""

    def __init__(self, state, index: int, on_event: Callable[[dict], None],
                 on_lost: Callable[[int], None]) -> None:
        self.state, self.index = state, index
        self.on_event, self.on_lost = on_event, on_lost
        self.pubsub = state.shards[index].events.pubsub()
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def subscribe(self, room_id: int) -> None:
        await self.pubsub.subscribe(self.state.room_channel(room_id))
        self._subscribed.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def unsubscribe(self, room_id: int) -> None:
        await self.pubsub.unsubscribe(self.state.room_channel(room_id))

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                if not self.pubsub.subscribed:  # nothing to read until a room is subscribed again
                    self._subscribed.clear()
                    await self._subscribed.wait()
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next read reconnects; meanwhile the rooms resume
                if not failing:
                    logger.warning("room events from shard %s interrupted (%s: %s); its rooms' sockets resume",
                                   self.state.shards[self.index].name, type(exc).__name__, exc)
                failing = True
                self.on_lost(self.index)
                await asyncio.sleep(0.5)
                continue
            if message and message["type"] == "message":
                try:
                    self.on_event(msgpack.unpackb(message["data"], raw=False))
                except Exception:  # one bad event must not stop the room events of the shard
                    logger.exception("hub failed to dispatch a room event from shard %s",
                                     self.state.shards[self.index].name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()


class MemoryRoomFeed:
    """The embedded default: the memory state hands each publish to the feeds of its room."""

    def __init__(self, state, index: int, on_event: Callable[[dict], None],
                 on_lost: Callable[[int], None]) -> None:
        self.state, self.on_event = state, on_event

    async def subscribe(self, room_id: int) -> None:
        self.state.feeds[room_id].add(self)

    async def unsubscribe(self, room_id: int) -> None:
        self.state.feeds[room_id].discard(self)

    async def close(self) -> None:
        for feeds in self.state.feeds.values():
            feeds.discard(self)


def room_feed(state, index: int, on_event: Callable[[dict], None], on_lost: Callable[[int], None]):
    from chat.memorystate import MemoryRoomState

    feed_class = MemoryRoomFeed if isinstance(state, MemoryRoomState) else RedisRoomFeed
    return feed_class(state, index, on_event, on_lost)
