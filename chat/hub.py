"""The per-process room hub.

Each process subscribes, on each room's own shard (chat/roomfeed.py), to the room's channel while
at least one local socket is in that room, so a room event crosses Redis once per instance; it
holds one channel on the channel layer for user-wide events (HUB_GROUP). It hands
the already-encoded frame to every local socket of the room in one loop. Messages of a room that
arrive together (the event loop was busy while they came) go to each socket as one run: one write,
one system call and one wake-up of the client for all of them, so a loaded instance gets cheaper
per message instead of falling behind. When a room's events may have been missed (a gap in its
seqs, a shard's events lost or the shard back after an outage) its sockets resume.

The hub owns the sidebar's per-user stream, which rides on the same subscriptions
(chat/hub_sidebar.py), and runs the heartbeat that keeps this process's presence entries alive in
Redis and notices a shard back after an outage (chat/hub_heartbeat.py).
"""

import asyncio
import logging
from collections import defaultdict
from datetime import datetime
from typing import Protocol

from channels.layers import get_channel_layer

from chat import metrics, protocol
from chat.hub_heartbeat import heartbeat_loop
from chat.hub_sidebar import SidebarWatchers
from chat.roomfeed import room_feed
from chat.roomstate import HUB_GROUP, room_state

logger = logging.getLogger(__name__)

# A room's last seen message while its shard's events were interrupted: unknown, maybe missed.
_EVENTS_LOST = (None, None)


class LocalConnection(Protocol):
    conn_id: str
    room_id: int | None  # None: a user socket, in no room
    user_id: int
    username: str
    session_tag: str  # digests of the socket's session key and its user's session hash (services.accounts)
    auth_tag: str
    # In its room's presence in Redis: only these does the heartbeat keep alive. A socket is in the
    # hub a moment before its join enters presence; refreshed then, its user would be online before
    # the join looked, which would then find nobody new to announce.
    present: bool

    def deliver(self, texts: tuple[str, ...], seqs: tuple[int | None, ...]) -> None: ...

    def close_with(self, code: int) -> None: ...

    def set_muted_until(self, until: datetime | None) -> None: ...

    def sidebar_refresh(self) -> None: ...

    blocked: frozenset[int]  # users whose mentions do not count for this socket's user


class RoomHub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.rooms: dict[int, set[LocalConnection]] = defaultdict(set)
        self._subscribed: set[int] = set()
        self._last_seq: dict[int, tuple] = {}  # per subscribed room: the newest message's (epoch, seq) received
        self._runs: dict[int, tuple[list[str], list[int]]] = {}  # per room: messages received, not yet handed out
        self._flush_scheduled = False
        self._room_locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._start_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._feeds: dict[int, object] = {}  # shard index -> its room feed
        self.sidebar = SidebarWatchers(start=self._ensure_started, hold=self._hold, release=self._release)
        self.user_sockets: set[LocalConnection] = set()  # sockets in no room (/ws/user/)
        # What a join read before it joined may be stale by now: each change a join could have
        # missed (a room subscribed anew or its state changed, a user closed or their standing
        # changed) takes the next serial, which joins compare with the serial they read at.
        self._serial = 0
        self._room_serial: dict[int, int] = {}  # subscribed rooms only
        self._user_serial: dict[int, int] = {}
        self._user_serial_floor = 0  # serials of users forgotten to bound the dict: joins older see a change

    def _feed(self, room_id: int):
        index = room_state().shard_index(room_id)
        feed = self._feeds.get(index)
        if feed is None:
            feed = self._feeds[index] = room_feed(room_state(), index, self.dispatch, self._shard_lost)
        return feed

    async def join(self, conn: LocalConnection) -> None:
        await self._ensure_started()
        self.rooms[conn.room_id].add(conn)
        await self._hold(conn.room_id)

    def mark(self) -> int:
        """The serial to give `changed_since` for a read that starts now."""
        return self._serial

    def changed_since(self, mark: int, *, room_id: int, user_id: int) -> bool:
        """Whether what a join read at `mark` may be stale now that it is in the hub: its room was
        subscribed (events before that never reached this process) or changed state since, or its
        user was closed or had their standing changed."""
        room = self._room_serial.get(room_id)
        return (room is None or room > mark or self._user_serial.get(user_id, 0) > mark
                or self._user_serial_floor > mark)

    def _room_changed(self, room_id: int) -> None:
        self._serial += 1
        self._room_serial[room_id] = self._serial

    def _user_changed(self, user_id: int) -> None:
        self._serial += 1
        if len(self._user_serial) >= 10_000:
            self._user_serial.clear()
            self._user_serial_floor = self._serial
        self._user_serial[user_id] = self._serial

    async def leave(self, conn: LocalConnection) -> None:
        members = self.rooms.get(conn.room_id)
        if members is None:
            return
        members.discard(conn)
        if not members:
            del self.rooms[conn.room_id]
            await self._release(conn.room_id)

    async def _hold(self, room_id: int) -> None:
        """Subscribe to the room's events unless this process is already. Callers wait for it, so
        nothing published after join() or watch() returns is missed; the per-room lock keeps a
        subscribe and the last release from racing."""
        async with self._room_locks[room_id]:
            if room_id not in self._subscribed:
                await self._feed(room_id).subscribe(room_id)
                self._subscribed.add(room_id)
                self._room_changed(room_id)

    async def _release(self, room_id: int) -> None:
        """Unsubscribe from the room once no local socket is in it or watches it."""
        async with self._room_locks[room_id]:
            if room_id in self._subscribed and not self.rooms.get(room_id) and not self.sidebar.watchers.get(room_id):
                self._subscribed.discard(room_id)
                self._last_seq.pop(room_id, None)
                self._room_serial.pop(room_id, None)
                try:
                    await self._feed(room_id).unsubscribe(room_id)
                except Exception:  # noqa: BLE001 - its shard is down; a later event of the room finds no socket
                    logger.warning("could not unsubscribe from room %s (its Redis shard unreachable?)", room_id)

    # --- user sockets (/ws/user/), which carry only the sidebar's stream ---

    async def attach(self, conn: LocalConnection) -> None:
        """A user socket (in no room): reached by user-wide events, closed with the others."""
        await self._ensure_started()
        self.user_sockets.add(conn)

    async def detach(self, conn: LocalConnection) -> None:
        self.user_sockets.discard(conn)
        await self.sidebar.unwatch(conn)

    def close_all(self, code: int) -> None:
        for conn in tuple(self.sockets()):
            conn.close_with(code)

    def connections(self):
        """The sockets in a room."""
        for members in self.rooms.values():
            yield from members

    def present(self):
        """The sockets in a room that have entered its presence (the heartbeat refreshes them)."""
        return (conn for conn in self.connections() if conn.present)

    def sockets(self):
        """Every local socket: those in a room and the user sockets."""
        yield from self.connections()
        yield from self.user_sockets

    def dispatch(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "room.frame" and event.get("seq") is not None:
            return self._take_message(int(event["room"]), int(event["seq"]), event["text"], event.get("prev"),
                                      event.get("epoch"))
        self._flush()  # messages received before this event go out before it
        if kind == "room.frame":  # not a message (typing, presence, an edit): handed out at once
            if event["text"].startswith(protocol.ROOM_STATE_PREFIXES) and int(event["room"]) in self._room_serial:
                self._room_changed(int(event["room"]))
            self._deliver(int(event["room"]), (event["text"],), (None,), exclude=event.get("exclude"))
        elif kind == "user.frame":
            room = event.get("room")
            for conn in tuple(self.rooms.get(room, ())) if room is not None else tuple(self.sockets()):
                if conn.user_id == event["user"] and conn.conn_id != event.get("exclude"):
                    conn.deliver((event["text"],), (None,))
        elif kind == "user.sidebar":
            self.sidebar.user_sidebar(event)
        elif kind == "user.close":
            self._user_changed(event["user"])
            self._close_user(event)
        elif kind == "user.standing":
            self._user_changed(event["user"])
            until = event.get("muted_until")
            until = datetime.fromisoformat(until) if until else None
            for conn in tuple(self.connections()):
                if conn.user_id == event["user"]:
                    conn.set_muted_until(until)
        else:
            logger.warning("hub ignored an event of unknown type %r", kind)

    def _close_user(self, event: dict) -> None:
        """A user's sockets close: all of them (a ban), or those in one room (access lost there), of
        one session (logout), or let in with a session hash other than the current one (new password)."""
        room, session, auth = event.get("room"), event.get("session"), event.get("auth")
        for conn in tuple(self.rooms.get(room, ())) if room is not None else tuple(self.sockets()):
            if (conn.user_id == event["user"] and session in (None, getattr(conn, "session_tag", None))
                    and (auth is None or auth != getattr(conn, "auth_tag", None))):
                conn.close_with(event["code"])

    def _take_message(self, room_id: int, seq: int, text: str, prev, epoch=None) -> None:
        """Add a message to its room's run, handed out once this turn of the event loop ends."""
        if self._missed_before(room_id, seq, prev, epoch):
            # Delivering this one would move the sockets past what they missed: send them to
            # resume instead (?after= replays everything, the missed messages included).
            self._flush()
            members = tuple(self.rooms.get(room_id, ()))
            metrics.HUB_GAPS.inc()
            logger.warning("room %s: this instance missed messages before seq %s (Redis lost or restarted?);"
                           " closing its %d socket(s) there with 1012 so they resume", room_id, seq, len(members))
            for conn in members:
                conn.close_with(protocol.CLOSE_SERVICE_RESTART)
            self.sidebar.stale((room_id,))
            return
        run = self._runs.get(room_id)
        if run is None:
            run = self._runs[room_id] = ([], [])
        run[0].append(text)
        run[1].append(seq)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Hand each room's run of messages to its sockets."""
        self._flush_scheduled = False
        runs, self._runs = self._runs, {}
        sidebar = self.sidebar
        for room_id, (texts, seqs) in runs.items():
            self._deliver(room_id, tuple(texts), tuple(seqs))
            if room_id in sidebar.watchers:
                try:
                    sidebar.activity(room_id, tuple(texts), tuple(seqs))
                except Exception:  # the sidebar is a courtesy: the other rooms' runs still go out
                    logger.exception("sidebar frames of room %s not handed out", room_id)

    def _deliver(self, room_id: int, texts: tuple[str, ...], seqs: tuple[int | None, ...],
                 exclude: str | None = None) -> None:
        members = tuple(self.rooms.get(room_id, ()))
        for conn in members:
            if conn.conn_id != exclude:
                try:
                    conn.deliver(texts, seqs)
                except Exception:  # one broken socket must not cost the others their frames
                    logger.exception("could not hand frames to %s", conn.conn_id)
        metrics.FANOUT_DELIVERIES.inc(len(members) * len(texts))

    def _missed_before(self, room_id: int, seq: int, prev, epoch) -> bool:
        """Whether a message published in the room before this one never reached this hub: every
        message names the seq before it (-1 in a new epoch, so its predecessor is unknown) and its
        epoch; a new epoch means the room's Redis state was lost or replaced (a failover), and what
        the old one published last may never have reached this hub."""
        if room_id not in self._subscribed:  # joining or leaving: nothing to compare with
            return False
        last, self._last_seq[room_id] = self._last_seq.get(room_id), (epoch, seq)
        if last is _EVENTS_LOST:  # the first since the shard's events stopped: any before it may be lost
            return True
        if last is None:
            return False
        if epoch is not None and last[0] is not None and epoch != last[0]:
            return True
        return prev is not None and int(prev) != last[1]

    async def _ensure_started(self) -> None:
        if self.channel is not None:
            return
        async with self._start_lock:
            if self.channel is not None:
                return
            channel = await self.layer.new_channel("hub.")
            await self.layer.group_add(HUB_GROUP, channel)
            self.channel = channel
            self._tasks = [asyncio.ensure_future(self._receive_loop()), asyncio.ensure_future(heartbeat_loop(self))]

    async def _receive_loop(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
                self.dispatch(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub failed to receive or dispatch an event")
                await asyncio.sleep(0.5)

    def _shard_lost(self, index: int) -> None:
        """A shard's room events stopped arriving: its rooms' sockets resume (1012), the others go on."""
        self._flush()
        rooms = [room_id for room_id in self.rooms if room_state().shard_index(room_id) == index]
        for room_id in rooms:
            # Sockets that join before the last of these leaves keep the room subscribed, on a
            # connection that may come back after more publishes: its next message resyncs them.
            self._last_seq[room_id] = _EVENTS_LOST
            if room_id in self._room_serial:  # its state may have changed unseen: joins under way read again
                self._room_changed(room_id)
            for conn in tuple(self.rooms.get(room_id, ())):
                conn.close_with(protocol.CLOSE_SERVICE_RESTART)
        self.sidebar.stale([room_id for room_id in self.sidebar.watchers if room_state().shard_index(room_id) == index])

    async def after_redis_outage(self, shards: set[int]) -> None:
        """Shards are back but may have restarted empty, and this process's subscriptions with
        them: subscribe to the hub group afresh and send the sockets of their rooms to reconnect
        (1012), so each rejoins its room on a fresh subscription and resumes with ?after= without a gap."""
        closing = [c for c in self.connections() if room_state().shard_index(c.room_id) in shards]
        self._serial += 1  # user events may have been lost meanwhile: joins under way read again
        self._user_serial_floor = self._serial
        logger.warning("Redis shard(s) %s back after an outage: closing %d socket(s) with 1012 so they resume",
                       sorted(shards), len(closing))
        try:
            await self.layer.group_discard(HUB_GROUP, self.channel)
            await self.layer.group_add(HUB_GROUP, self.channel)
        except Exception:  # the next heartbeat tries again
            logger.exception("could not resubscribe the hub after the Redis outage")
        for index in shards:
            self._shard_lost(index)


_hubs: dict = {}


def get_hub() -> RoomHub:
    """The hub of this process's running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = RoomHub()
    return hub
