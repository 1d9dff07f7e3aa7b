"""The sidebar's per-user stream: what every socket does to keep its user's sidebar live, and the
user socket (/ws/user/) that carries only that, for pages without a room (the home page).

A socket registers its user's sidebar rooms with the process's hub as a watcher (chat/hub_sidebar.py); the
hub hands it `sidebar.activity` for each message there and asks it to refresh (`sidebar_refresh`)
when the set changed (a `user.sidebar` event) or frames may have been missed (a Redis shard lost).
"""

import asyncio
import logging
import uuid
from collections import deque

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import drain, metrics, protocol, selectors
from chat.hub import get_hub
from chat.join_gate import join_done
from chat.services import accounts, limits, presence
from chat.services.blocks import blocked_user_ids

logger = logging.getLogger(__name__)


class SidebarWatcher:
    """For a consumer with `user_id`, `push(frame)` and (when in a room) `who`: keeps the hub's
    watch on its user's sidebar rooms current."""

    _sidebar_lock: asyncio.Lock | None = None
    _sidebar_task: asyncio.Task | None = None
    _sidebar_gone = False
    _sidebar_asked = False  # a room socket watches once its client sent sidebar.watch
    blocked: frozenset[int] = frozenset()

    async def sidebar_watch(self) -> None:
        """Watch the user's sidebar rooms, then tell the client to fetch its sidebar: frames before
        the watch are not sent."""
        if self._sidebar_lock is None:
            self._sidebar_lock = asyncio.Lock()
        async with self._sidebar_lock:  # refreshes apply in order, never an older set last
            try:
                rooms = await presence.sidebar_rooms(user_id=self.user_id)
                # Read by the hub: these users' mentions do not light up this sidebar.
                self.blocked = frozenset(await database_sync_to_async(blocked_user_ids)(self.user_id))
                if self._sidebar_gone:  # closed meanwhile: a watch now would outlive the socket
                    return
                await get_hub().sidebar.watch(self, rooms)
                if self._sidebar_gone:
                    return await get_hub().sidebar.unwatch(self)
            except Exception:  # noqa: BLE001 - Postgres or Redis down: the sidebar is not live, the socket is fine
                logger.warning("sidebar of user %s not watched (database or Redis unreachable?)", self.user_id)
                return
        self.push(protocol.sidebar_changed_frame())

    def sidebar_refresh(self) -> None:
        """Called by the hub, synchronously: refresh beside the fan-out loop."""
        if self._sidebar_gone or getattr(self, "_closing", False):
            return
        self._sidebar_task = asyncio.ensure_future(self.sidebar_watch())

    async def sidebar_unwatch(self) -> None:
        """The socket is gone: no more sidebar frames, no refresh after this."""
        self._sidebar_gone = True
        await get_hub().sidebar.unwatch(self)


class UserConsumer(SidebarWatcher, AsyncWebsocketConsumer):
    """/ws/user/: `sidebar.hello`, then sidebar frames; answers `ping`. Counts toward the user's
    socket cap (4429), closes with 4401 on logout and 1012 on drain, like a room's socket."""

    channel_layer_alias = "__per_process_hub_only__"  # the hub hands it its frames
    room_id = None
    user_id: int | None = None
    # Only while frames are queued (most sockets are idle): the outbox and the task that sends it.
    _outbox: deque[str] | None = None
    _outbox_bytes = 0
    _writer: asyncio.Task | None = None
    _closing = False
    _admitted = False

    async def connect(self):
        try:
            await self._connect()
        finally:
            join_done()  # hello out, or closed before it: the join is over either way

    async def _connect(self):
        await self.accept()
        if drain.is_draining():
            return await self.close(code=protocol.CLOSE_SERVICE_RESTART)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.close(code=protocol.CLOSE_NOT_LOGGED_IN)
        if await database_sync_to_async(selectors.user_is_banned)(user):
            return await self.close(code=protocol.CLOSE_FORBIDDEN)
        self.conn_id = uuid.uuid4().hex
        self.user_id, self.username = user.pk, user.get_username()
        if not await limits.socket_admit(user_id=self.user_id, conn_id=self.conn_id):
            return await self.close(code=protocol.CLOSE_TOO_MANY_SOCKETS)
        self._admitted = True
        self.session_tag, self.auth_tag = accounts.socket_tags(self.scope)
        accounts.socket_scope_release(self.scope)
        await get_hub().attach(self)
        self.push(protocol.sidebar_hello_frame(user={"id": self.user_id, "username": self.username}))
        await self.sidebar_watch()

    async def disconnect(self, code):
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
        if self._admitted:
            self._sidebar_gone = True
            await get_hub().detach(self)
            try:
                await limits.socket_release(user_id=self.user_id, conn_id=self.conn_id)
            except Exception:  # noqa: BLE001 - a dying socket must not raise; the count expires anyway
                logger.warning("socket count not released for %s; it expires on its own", self.conn_id)

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            return await self.close(code=protocol.CLOSE_UNSUPPORTED)
        if len(text_data) > protocol.MAX_FRAME_BYTES:
            return await self.close(code=protocol.CLOSE_TOO_BIG)
        try:
            frame = protocol.parse(text_data)
        except protocol.ProtocolError as exc:
            return self.push(protocol.error_frame(code=exc.code, detail=exc.detail))
        if frame.type == "ping":
            self.push(protocol.pong_frame())
        else:
            self.push(protocol.error_frame(code="invalid_frame", detail="This socket only answers 'ping'."))

    # --- called by the hub ---

    def deliver(self, texts: tuple[str, ...], seqs: tuple[int | None, ...]) -> None:
        for text in texts:
            self._enqueue(text)

    def close_with(self, code: int) -> None:
        if not self._closing:
            self._closing = True
            self._close_task = asyncio.ensure_future(self.close(code=code))

    def set_muted_until(self, until) -> None:
        pass  # a user socket sends no messages

    def push(self, frame: dict) -> None:
        metrics.FRAMES_OUT.labels(type=frame["type"]).inc()
        self._enqueue(protocol.encode(frame))

    def _enqueue(self, text: str) -> None:
        if self._closing:
            return
        # Bounded like a room socket's outbox: a client that does not read is cut (4408) and
        # fetches its sidebar again when it reconnects.
        if self._outbox_bytes + len(text) > settings.CHAT_SOCKET_BUFFER_BYTES:
            metrics.SLOW_CONSUMER_CUTS.inc()
            if self._outbox is not None:
                self._outbox.clear()
            return self.close_with(protocol.CLOSE_SLOW_CONSUMER)
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(text)
        self._outbox_bytes += len(text)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_loop())

    async def _write_loop(self) -> None:
        """Send what is queued, then end: the next frame starts another."""
        outbox = self._outbox
        while outbox:
            text = outbox.popleft()
            self._outbox_bytes -= len(text)
            await self.send(text_data=text)
        self._writer = self._outbox = None
