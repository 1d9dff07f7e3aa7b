"""The room state in this process's memory, for the embedded single-process default: the same
operations as chat.roomstate.RedisRoomState."""

import asyncio
import itertools
import time
from collections import defaultdict

from django.conf import settings

from chat import idempotency, protocol
from chat.limits import MemoryLimits
from chat.roomfeed import room_frame_event
from chat.roompresence import presence_ttl
from chat.roomstate import SendOutcome


class MemoryRoomState:
    """The same operations in this process's memory, for the embedded single-process default."""

    def __init__(self) -> None:
        self.seqs: dict[int, int] = {}
        self.epochs: dict[int, str] = {}
        # (room, user, client_id) -> (message id, seq, acked, when): insertion order is time order
        self.client_ids: dict[tuple, tuple[str, int, bool, float]] = {}
        self.active: dict[int, float] = {}  # room -> its last send (monotonic)
        self._swept = time.monotonic()
        self.recent_frames: dict[int, dict[int, dict]] = defaultdict(dict)
        self.recent_ids: dict[int, dict[str, int]] = defaultdict(dict)
        self.changed: dict[int, dict[str, dict]] = defaultdict(dict)  # room -> older messages changed while live
        self.presence: dict[int, dict[str, tuple[str, float]]] = defaultdict(dict)
        self.typing: dict[tuple[int, int], tuple[float, float, bool]] = {}  # -> (last start, last stop, shown)
        self.limits = MemoryLimits()
        self.lock = asyncio.Lock()
        self.feeds: dict[int, set] = defaultdict(set)  # room -> the hubs' feeds subscribed to it (chat.roomfeed)

    shard_count = 1

    def shard_index(self, room_id: int) -> int:
        return 0

    def bucket_in_send(self, *, user_id: int, room_id: int) -> bool:
        return False  # one process: the bucket is a dict lookup away

    async def send(self, *, room_id: int, user_id: int, client_id: str, message: dict, seed: int | None,
                   rate: tuple[int, float] | None = None) -> SendOutcome:
        # The lock keeps "take a seq" and "publish" together, so publishes go out in seq order.
        async with self.lock:
            self._sweep()
            previous = self.client_ids.get((room_id, user_id, client_id))
            if previous:
                return SendOutcome("dup", previous[1], previous[0], acked=previous[2])
            prev = self.seqs.get(room_id)
            if prev is None and seed is None:
                return SendOutcome("seed")
            if prev is None:
                self.seqs[room_id], self.epochs[room_id], prev = seed, str(seed), -1
            self.seqs[room_id] += 1
            seq = self.seqs[room_id]
            self.client_ids[(room_id, user_id, client_id)] = (message["id"], seq, False, time.monotonic())
            self.active[room_id] = time.monotonic()
            frame = protocol.message_frame({**message, "seq": seq})
            buffer, ids = self.recent_frames[room_id], self.recent_ids[room_id]
            buffer[seq], ids[message["id"]] = frame, seq
            for old in itertools.islice(sorted(buffer), max(0, len(buffer) - settings.CHAT_RECENT_BUFFER)):
                ids.pop(buffer.pop(old)["id"], None)
            await self.publish(room_id, room_frame_event(room_id, protocol.encode(frame), seq, prev=prev,
                                                         epoch=self.epochs[room_id]))
        return SendOutcome("ok", seq, message["id"])

    def _sweep(self) -> None:
        """Entries past the idempotency window and quiet rooms' buffers go, as they do in Redis
        (checked at most once a second)."""
        now = time.monotonic()
        if now - self._swept < 1:
            return
        self._swept = now
        expired = now - idempotency.window_seconds()
        while self.client_ids and next(iter(self.client_ids.values()))[3] < expired:
            del self.client_ids[next(iter(self.client_ids))]
        for room_id, at in list(self.active.items()):
            if now - at > settings.CHAT_ROOM_IDLE_SECONDS:
                del self.active[room_id]
                self.recent_frames.pop(room_id, None)
                self.recent_ids.pop(room_id, None)
                self.changed.pop(room_id, None)

    async def publish(self, room_id: int, event: dict) -> None:
        for feed in tuple(self.feeds.get(room_id, ())):
            feed.on_event(event)

    async def send_acked(self, *, room_id: int, user_id: int, client_id: str, message_id: str, seq: int) -> None:
        entry = self.client_ids.get((room_id, user_id, client_id))
        if entry:
            self.client_ids[(room_id, user_id, client_id)] = (message_id, seq, True, entry[3])

    async def client_ids_restore(self, *, room_id: int, entries: list[tuple[int, str, str, int]]) -> None:
        for user_id, client_id, message_id, seq in reversed(entries):  # oldest first: time order
            self.client_ids.setdefault((room_id, user_id, client_id), (message_id, seq, True, time.monotonic()))

    async def last_seq(self, room_id: int) -> int | None:
        return self.seqs.get(room_id)

    async def replay_page(self, room_id: int, after: int, limit: int) -> tuple[list[dict], int | None]:
        buffer = self.recent_frames.get(room_id, {})
        seqs = sorted(buffer)
        if not seqs:  # a quiet room's empty buffer holds every message after its last seq
            return [], self.seqs[room_id] + 1 if room_id in self.seqs else None
        return [buffer[seq] for seq in seqs if seq > after][:limit], seqs[0]

    async def recent_get(self, room_id: int, seq: int) -> dict | None:
        return self.recent_frames.get(room_id, {}).get(seq)

    async def message_current(self, room_id: int, message_id: str) -> dict | None:
        seq = self.recent_ids.get(room_id, {}).get(message_id)
        if seq is not None and seq in self.recent_frames.get(room_id, {}):
            return self.recent_frames[room_id][seq]
        return self.changed.get(room_id, {}).get(message_id)

    async def message_change(self, room_id: int, frame: dict, *, from_rev: int, live: dict | None) -> dict | None:
        async with self.lock:  # the check, the store and the publish together, as in the script
            current = await self.message_current(room_id, frame["id"])
            if current is not None and current.get("rev", 1) != from_rev:
                return current
            seq = self.recent_ids.get(room_id, {}).get(frame["id"])
            if seq is not None and seq in self.recent_frames.get(room_id, {}):
                self.recent_frames[room_id][seq] = frame
            else:
                self.changed[room_id][frame["id"]] = frame
            if live is not None:
                await self.publish(room_id, room_frame_event(room_id, protocol.encode(live)))
            return None

    async def presence_join(self, room_id: int, conn_id: str, username: str) -> tuple[bool, int | None, list[str]]:
        was_online = username in await self.presence_online(room_id)
        self.presence[room_id][conn_id] = (username, time.time() + presence_ttl())
        return not was_online, await self.last_seq(room_id), await self.presence_online(room_id)

    async def presence_leave(self, room_id: int, conn_id: str, username: str) -> bool:
        self.presence[room_id].pop(conn_id, None)
        return username not in await self.presence_online(room_id)

    async def presence_refresh(self, entries: list[tuple[int, str, str]], keep=None) -> tuple[list[int], set[int]]:
        for room_id, conn_id, username in filter(keep, entries):
            self.presence[room_id][conn_id] = (username, time.time() + presence_ttl())
        return [], set()

    async def presence_announce(self, room_id: int) -> None:
        text = protocol.encode(protocol.presence_frame(online=await self.presence_online(room_id)))
        await self.publish(room_id, room_frame_event(room_id, text))

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

    async def server_ids(self) -> list[str | None]:
        return ["memory"]

    async def ping(self, timeout: float = 5.0) -> dict[str, str]:
        return {"memory": "ok"}
