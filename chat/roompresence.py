"""Who is online in each room, in Redis: the presence part of RedisRoomState (chat/roomstate.py),
which supplies `_room`, `shards`, `shard_index` and `room_channel`.

Presence is two levels, so reading who is online costs one entry per user, not per socket:
`<room>:presence` scores each online username by its latest expiry, and
`<room>:presence:<username>` scores that user's connections. Instances refresh their
connections' expiries; a crashed instance's entries run out on their own.
"""

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

import msgpack
from django.conf import settings

from chat import protocol
from chat.limits import REFRESH_CHUNK
from chat.roomfeed import room_frame_event


def presence_ttl() -> int:
    return settings.CHAT_PRESENCE_TTL


class RedisPresence:
    """Joins, leaves, the heartbeat's refresh, announcements and the online list, per room on its shard."""

    async def presence_join(self, room_id: int, conn_id: str, username: str) -> tuple[bool, int | None, list[str]]:
        """Adds the connection; whether its user was not online in the room before, the room's seq
        (None: no counter) and who is online, the user included."""
        shard, room = self._room(room_id)
        now = time.time()
        new, seq, members = await shard.presence_join(
            keys=[f"{room}:presence", f"{room}:presence:{username}", f"{room}:meta"],
            args=[username, conn_id, now + presence_ttl(), now, presence_ttl()])
        return bool(new), int(seq) if seq else None, sorted(member.decode() for member in members)

    async def presence_leave(self, room_id: int, conn_id: str, username: str) -> bool:
        """Removes the connection; True when that was the user's last one in the room."""
        shard, room = self._room(room_id)
        return bool(await shard.presence_leave(keys=[f"{room}:presence", f"{room}:presence:{username}"],
                                               args=[username, conn_id, time.time()]))

    async def presence_refresh(self, entries: list[tuple[int, str, str]],
                               keep: Callable[[tuple[int, str, str]], bool] | None = None
                               ) -> tuple[list[int], set[int]]:
        """Extend this instance's connections and drop expired users, shard by shard side by side;
        returns the rooms whose online list changed (someone expired, or is back after their entries
        ran out, a stall or an empty restart) and the shards that could not be reached. `keep` says
        whether a connection is still there as its call goes: one that left meanwhile (its entries
        gone) must not be put back."""
        by_shard: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
        for entry in entries:
            by_shard[self.shard_index(entry[0])].append(entry)
        indexes = range(len(self.shards))
        results = await asyncio.gather(*(self._presence_refresh(i, by_shard[i], keep) for i in indexes),
                                       return_exceptions=True)
        failed = {i for i, result in zip(indexes, results, strict=True) if isinstance(result, BaseException)}
        return [room for result in results if not isinstance(result, BaseException) for room in result], failed

    async def _presence_refresh(self, index: int, entries: list[tuple[int, str, str]],
                                keep: Callable[[tuple[int, str, str]], bool] | None) -> list[int]:
        """One script call per REFRESH_CHUNK connections; the last also trims the rooms' online sets."""
        if not entries:
            return []
        expiry, now = time.time() + presence_ttl(), time.time()
        rooms = sorted({room_id for room_id, _, _ in entries})
        changed: set[int] = set()
        for start in range(0, len(entries), REFRESH_CHUNK):
            chunk = [entry for entry in entries[start:start + REFRESH_CHUNK] if keep is None or keep(entry)]
            trim = rooms if start + REFRESH_CHUNK >= len(entries) else []
            names = [(self._room(room_id)[1], username) for room_id, _, username in chunk]
            keys = [f"{room}:presence:{username}" for room, username in names]
            keys += [f"{room}:presence" for room, _ in names]
            keys += [f"{self._room(room_id)[1]}:presence" for room_id in trim]
            args = [expiry, presence_ttl(), now, len(chunk), *(conn_id for _, conn_id, _ in chunk),
                    *(username for _, username in names)]
            removed, back = await self.shards[index].presence_refresh(keys=keys, args=args)
            changed.update(chunk[position - 1][0] for position in back)
        changed.update(room_id for room_id, count in zip(rooms, removed, strict=True) if count)
        return sorted(changed)

    async def presence_announce(self, room_id: int) -> None:
        """Publish who is online to the room's sockets, if that is still who is online when it goes
        (PRESENCE_PUBLISH_SCRIPT): read again while it changes, a few times; past that, the change's
        own announcement follows."""
        shard, room = self._room(room_id)
        for _ in range(3):
            online = await self.presence_online(room_id)
            text = protocol.encode(protocol.presence_frame(online=online))
            event = msgpack.packb(room_frame_event(room_id, text), use_bin_type=True)
            if await shard.presence_publish(keys=[f"{room}:presence", self.room_channel(room_id)],
                                            args=[time.time(), event, *online]):
                return

    async def presence_online(self, room_id: int) -> list[str]:
        shard, room = self._room(room_id)
        members = await shard.redis.zrangebyscore(f"{room}:presence", time.time(), "+inf")
        return sorted(m.decode() for m in members)
