"""The per-process room hub.

Each process holds one channel on the channel layer. The hub joins a room's group while at least
one local socket is in that room, so a room event crosses Redis once per instance; it then hands
the already-encoded frame to every local socket of the room in one loop. Messages of a room that
arrive together (the event loop was busy while they came) go to each socket as one run: one write,
one system call and one wake-up of the client for all of them, so a loaded instance gets cheaper
per message instead of falling behind. It also keeps this process's presence entries alive in
Redis, so a crashed instance's users expire on their own.
"""

import asyncio
import logging
from collections import defaultdict
from datetime import datetime
from typing import Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from chat import metrics, protocol
from chat.roomstate import HUB_GROUP, room_group, room_state

logger = logging.getLogger(__name__)


class LocalConnection(Protocol):
    conn_id: str
    room_id: int
    user_id: int
    username: str
    session_tag: str  # digests of the socket's session key and its user's session hash (services.accounts)
    auth_tag: str

    def deliver(self, texts: tuple[str, ...], seqs: tuple[int | None, ...]) -> None: ...

    def close_with(self, code: int) -> None: ...

    def set_muted_until(self, until: datetime | None) -> None: ...


class RoomHub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.rooms: dict[int, set[LocalConnection]] = defaultdict(set)
        self._subscribed: set[int] = set()
        self._last_seq: dict[int, int] = {}  # per subscribed room: the newest message seq received
        self._runs: dict[int, tuple[list[str], list[int]]] = {}  # per room: messages received, not yet handed out
        self._flush_scheduled = False
        self._room_locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._start_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    async def join(self, conn: LocalConnection) -> None:
        await self._ensure_started()
        self.rooms[conn.room_id].add(conn)
        # Joiners wait for the subscription, so nothing published after join() returns is missed;
        # the per-room lock keeps a join and the last leave from racing on subscribe/unsubscribe.
        async with self._room_locks[conn.room_id]:
            if conn.room_id not in self._subscribed:
                await self.layer.group_add(room_group(conn.room_id), self.channel)
                self._subscribed.add(conn.room_id)

    async def leave(self, conn: LocalConnection) -> None:
        members = self.rooms.get(conn.room_id)
        if members is None:
            return
        members.discard(conn)
        if members:
            return
        del self.rooms[conn.room_id]
        async with self._room_locks[conn.room_id]:
            if conn.room_id in self._subscribed and not self.rooms.get(conn.room_id):
                await self.layer.group_discard(room_group(conn.room_id), self.channel)
                self._subscribed.discard(conn.room_id)
                self._last_seq.pop(conn.room_id, None)

    def close_all(self, code: int) -> None:
        for conn in tuple(self.connections()):
            conn.close_with(code)

    def connections(self):
        for members in self.rooms.values():
            yield from members

    def dispatch(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "room.frame" and event.get("seq") is not None:
            return self._take_message(int(event["room"]), int(event["seq"]), event["text"], event.get("prev"))
        self._flush()  # messages received before this event go out before it
        if kind == "room.frame":  # not a message (typing, presence, an edit): handed out at once
            self._deliver(int(event["room"]), (event["text"],), (None,), exclude=event.get("exclude"))
        elif kind == "user.frame":
            room = event.get("room")
            for conn in tuple(self.rooms.get(room, ())) if room is not None else tuple(self.connections()):
                if conn.user_id == event["user"] and conn.conn_id != event.get("exclude"):
                    conn.deliver((event["text"],), (None,))
        elif kind == "user.close":
            self._close_user(event)
        elif kind == "user.standing":
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
        for conn in tuple(self.rooms.get(room, ())) if room is not None else tuple(self.connections()):
            if (conn.user_id == event["user"] and session in (None, getattr(conn, "session_tag", None))
                    and (auth is None or auth != getattr(conn, "auth_tag", None))):
                conn.close_with(event["code"])

    def _take_message(self, room_id: int, seq: int, text: str, prev) -> None:
        """Add a message to its room's run, handed out once this turn of the event loop ends."""
        if self._missed_before(room_id, seq, prev):
            # Delivering this one would move the sockets past what they missed: send them to
            # resume instead (?after= replays everything, the missed messages included).
            self._flush()
            members = tuple(self.rooms.get(room_id, ()))
            metrics.HUB_GAPS.inc()
            logger.warning("room %s: this instance missed messages before seq %s (Redis lost or restarted?);"
                           " closing its %d socket(s) there with 1012 so they resume", room_id, seq, len(members))
            for conn in members:
                conn.close_with(protocol.CLOSE_SERVICE_RESTART)
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
        for room_id, (texts, seqs) in runs.items():
            self._deliver(room_id, tuple(texts), tuple(seqs))

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

    def _missed_before(self, room_id: int, seq: int, prev) -> bool:
        """Whether a message published in the room before this one never reached this hub: every
        message names the seq before it (-1 after the counter restarted, so its predecessor is unknown)."""
        if room_id not in self._subscribed:  # joining or leaving: nothing to compare with
            return False
        last, self._last_seq[room_id] = self._last_seq.get(room_id), seq
        return last is not None and prev is not None and int(prev) != last

    async def _ensure_started(self) -> None:
        if self.channel is not None:
            return
        async with self._start_lock:
            if self.channel is not None:
                return
            channel = await self.layer.new_channel("hub.")
            await self.layer.group_add(HUB_GROUP, channel)
            self.channel = channel
            self._tasks = [asyncio.ensure_future(self._receive_loop()), asyncio.ensure_future(self._heartbeat_loop())]

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

    async def _heartbeat_loop(self) -> None:
        interval = max(1.0, settings.CHAT_PRESENCE_TTL / 3)
        redis_lost, server_id = False, None
        while True:
            await asyncio.sleep(interval)
            try:
                # A new server id means Redis restarted, even if no call failed meanwhile.
                current = await room_state().server_id()
                redis_lost = redis_lost or (server_id is not None and current != server_id)
                server_id = current
                entries = [(c.room_id, c.conn_id, c.username) for c in self.connections()]
                rooms_left = await room_state().presence_refresh(entries)
                # The user's socket count (CHAT_MAX_SOCKETS_PER_USER) expires like presence.
                await room_state().limits.sockets_refresh([(c.user_id, c.conn_id) for c in self.connections()],
                                                          settings.CHAT_PRESENCE_TTL)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not redis_lost:
                    logger.exception("presence heartbeat failed (Redis unreachable?); retrying every %.0f s", interval)
                redis_lost = True
                continue
            if redis_lost:
                redis_lost = False
                await self._after_redis_outage()
            from chat.services.presence import presence_announce  # services build on the hub's layer

            for room_id in rooms_left:
                await presence_announce(room_id)

    async def _after_redis_outage(self) -> None:
        """Redis is back but may have restarted empty, and this process's subscriptions with it:
        subscribe to the hub group afresh and send every socket to reconnect (1012), so each
        rejoins its room on a fresh subscription and resumes with ?after= without a gap."""
        logger.warning("Redis is back after an outage: closing %d socket(s) with 1012 so they resume",
                       sum(1 for _ in self.connections()))
        try:
            await self.layer.group_discard(HUB_GROUP, self.channel)
            await self.layer.group_add(HUB_GROUP, self.channel)
        except Exception:  # the next heartbeat tries again
            logger.exception("could not resubscribe the hub after the Redis outage")
        self.close_all(protocol.CLOSE_SERVICE_RESTART)


_hubs: dict = {}


def get_hub() -> RoomHub:
    """The hub of this process's running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = RoomHub()
    return hub
