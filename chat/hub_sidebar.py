"""The sidebar's per-user stream, kept by the per-process room hub (chat/hub.py).

It rides on the hub's subscriptions: a socket (a user socket of /ws/user/, or a room's once its
client sent sidebar.watch) registers its user's sidebar rooms as a watcher (`watch`); a room
watched or joined is subscribed once per process, and each message of a watched room becomes one
small `sidebar.activity` frame per watcher (its own room's sockets aside), its mentions read once
per message. Sidebar changes that are not messages come as `user.sidebar` events through HUB_GROUP.
"""

import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import orjson

from chat import protocol

if TYPE_CHECKING:
    from chat.hub import LocalConnection

logger = logging.getLogger(__name__)


class SidebarWatchers:
    """The sockets watching rooms for their sidebar. `start` readies the hub, `hold` and `release`
    subscribe to a room's events and let them go (the hub's, shared with its room sockets)."""

    def __init__(self, *, start: Callable[[], Awaitable[None]], hold: Callable[[int], Awaitable[None]],
                 release: Callable[[int], Awaitable[None]]) -> None:
        self._start, self._hold, self._release = start, hold, release
        self.watchers: dict[int, set[LocalConnection]] = defaultdict(set)  # room -> sockets with it in their sidebar
        self._watched: dict[LocalConnection, set[int]] = {}  # socket -> the rooms it watches
        self._direct: set[int] = set()  # watched rooms that are DMs: every message there mentions the other member

    async def watch(self, conn: "LocalConnection", rooms: dict[int, bool]) -> None:
        """Make `rooms` (room id -> is a DM) the socket's sidebar rooms: it gets `sidebar.activity`
        for each message there, except in its own room. Called again with the new set when it changes."""
        await self._start()
        old = self._watched.get(conn, set())
        new = set(rooms)
        self._watched[conn] = new
        self._direct.update(room_id for room_id, direct in rooms.items() if direct)
        for room_id in new - old:
            self.watchers[room_id].add(conn)
        for room_id in old - new:
            await self._unwatch_room(conn, room_id)
        for room_id in new - old:
            try:
                await self._hold(room_id)
            except Exception:  # noqa: BLE001 - its shard is down: that room's sidebar entry is not live until a refresh
                logger.warning("could not subscribe to room %s for a sidebar (its Redis shard unreachable?)", room_id)

    async def unwatch(self, conn: "LocalConnection") -> None:
        for room_id in self._watched.pop(conn, ()):
            await self._unwatch_room(conn, room_id)

    async def _unwatch_room(self, conn: "LocalConnection", room_id: int) -> None:
        watchers = self.watchers.get(room_id)
        if watchers is not None:
            watchers.discard(conn)
            if not watchers:
                del self.watchers[room_id]
                self._direct.discard(room_id)
                await self._release(room_id)

    def activity(self, room_id: int, texts: tuple[str, ...], seqs: tuple[int | None, ...]) -> None:
        """Each message of a watched room to its watchers as `sidebar.activity`: its mentions are
        read once per message, whatever the number of watchers; the frame comes in two encodings."""
        watchers = tuple(self.watchers.get(room_id, ()))
        if not watchers:
            return
        direct = room_id in self._direct
        for text, seq in zip(texts, seqs, strict=True):
            message = orjson.loads(text)
            author, names = message["author"]["id"], protocol.mentioned_usernames(message["body"])
            frames = [protocol.encode(protocol.sidebar_activity_frame(room=message["room"], seq=seq, mention=flag))
                      for flag in (False, True)]
            for conn in watchers:
                if conn.room_id == room_id or conn.user_id == author:  # its own room, its own message
                    continue
                try:
                    mentioned = (direct or conn.username in names) and author not in conn.blocked
                    conn.deliver((frames[mentioned],), (None,))
                except Exception:  # one broken socket must not cost the others their frames
                    logger.exception("could not hand a sidebar frame to %s", conn.conn_id)

    def stale(self, room_ids: Iterable[int]) -> None:
        """Watchers of these rooms may have missed messages there: they fetch their sidebar again."""
        stale = {conn for room_id in room_ids for conn in self.watchers.get(room_id, ())}
        for conn in stale:
            with contextlib.suppress(Exception):
                conn.sidebar_refresh()

    def user_sidebar(self, event: dict) -> None:
        """A `user.sidebar` event: the users' set changed (refresh), or a frame for their sidebars (`text`)."""
        users, text = set(event["users"]), event.get("text")
        for conn in tuple(self._watched):  # only those watching: a socket's hello stays its first frame
            if conn.user_id in users:
                if text is None:
                    conn.sidebar_refresh()
                elif conn.room_id != event.get("room"):
                    conn.deliver((text,), (None,))
