"""The chat WebSocket: thin. Parse a frame, call an action, send frames.

Outbound frames are written at once while nothing is queued for the socket and its transport has
room (through the server's fast frame path, config/ws_frames.py); otherwise they go through a
bounded outbox drained by one writer task, so the room hub never waits on a slow socket. The writer
waits while the socket's transport is full, so a client that does not read fills the outbox: past
CHAT_SOCKET_BUFFER_BYTES of live frames it is closed with 4408 and resumes with ?after. Replayed
frames do not count: a replay is paced instead, a page at a time (CHAT_REPLAY_PAGE), the next page
read once the writer has sent the last, while the live frames held meanwhile count like queued ones.
"""

import asyncio
import logging
from collections import deque
from urllib.parse import parse_qs

import orjson
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import drain, logcontext, metrics, permissions, protocol
from chat.errors import SERVICE_UNAVAILABLE, ChatError
from chat.hub import get_hub
from chat.join_gate import join_done
from chat.services import accounts, limits, messages, presence, reactions, rooms, sending
from chat.user_consumer import SidebarWatcher

logger = logging.getLogger(__name__)

SOCKET_HIGH_WATER = 256 * 1024  # unsent bytes in the server's transport above which the writer waits
_cleanups: set[asyncio.Task] = set()  # sockets' cleanups under way, kept until done (the loop keeps none)


def cleanups_under_way() -> set[asyncio.Task]:
    """The cleanups of sockets that closed and have not finished leaving (the drain waits for them)."""
    return set(_cleanups)


class ChatConsumer(SidebarWatcher, AsyncWebsocketConsumer):
    # No per-socket channel: the per-process hub receives room events and hands them to us.
    channel_layer_alias = "__per_process_hub_only__"

    who: presence.Participant | None = None
    # Idle sockets are most sockets: what only a socket that falls behind needs (its outbox and the
    # writer task) exists only while frames wait, not from connect on.
    _outbox: deque[tuple[tuple[str, ...], int]] | None = None  # (texts, bytes counted against the limit)
    _outbox_bytes = 0
    _drained: asyncio.Event | None = None  # set once the writer has sent what was queued
    _writer: asyncio.Task | None = None  # runs while frames are queued
    _write_now = None  # the server's plain-call frames write, once accepted (config/ws_frames.py)
    _held_bytes = 0
    _replay_task: asyncio.Task | None = None
    _sends: sending.SocketSends | None = None  # from the socket's first send
    _sent_seq: int | None = None  # the highest message seq queued to this socket
    _closing = False
    present = False  # entered the room's presence (the hub's heartbeat keeps it alive from then on)
    _greeted = False  # hello sent: the user's standing changes go as `standing` frames
    _counted = False
    _leaving: asyncio.Task | None = None  # the cleanup, once begun

    async def __call__(self, scope, receive, send):
        # channels runs every receive as a new task under asyncio.wait, three event-loop turns a
        # frame; with the hub instead of a per-socket channel there is one source, so a plain loop.
        self.scope, self.channel_layer, self.base_send = scope, None, send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            # daphne cancels an application still running 10 s after its client left (its
            # application_close_timeout; thousands at once after a mass disconnect): the socket
            # still leaves the hub, presence and its user's count, or it would stay "online".
            self._cleanup()
            raise

    async def dispatch(self, message):
        # Skip channels' per-message close_old_connections() thread hop: ORM work already goes
        # through database_sync_to_async, which does it.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection lifecycle ---

    async def connect(self):
        try:
            await self._connect()
        finally:
            join_done()  # hello out, or closed before it: the join is over either way

    async def _connect(self):
        extensions = self.scope.get("extensions", {})
        self._unsent_bytes = extensions.get("chat.unsent_bytes")
        self._held: list[tuple[int | None, str]] | None = []  # live frames held while hello/replay go out
        await self.accept()
        self._write_now = extensions.get("chat.send_texts")
        metrics.CONNECTIONS.inc()
        self._counted = True
        if drain.is_draining():  # shutting down: try another instance
            return await self.close(code=protocol.CLOSE_SERVICE_RESTART)
        try:
            await self._join()
        except SERVICE_UNAVAILABLE as exc:  # Postgres or a Redis shard did not answer: come back shortly
            logger.warning("join told to try again later: %s: %s", type(exc).__name__, exc)
            await self.close(code=protocol.CLOSE_TRY_AGAIN_LATER, reason=f"retry_after={limits.join_retry_hint()}")

    async def _join(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.close(code=protocol.CLOSE_NOT_LOGGED_IN)
        try:
            who = await presence.participant_join(user=user, slug=self.scope["url_route"]["kwargs"]["slug"])
        except ChatError as exc:
            code = protocol.CLOSE_NOT_FOUND if exc.code == "not_found" else protocol.CLOSE_FORBIDDEN
            return await self.close(code=code)
        if not await limits.socket_admit(user_id=who.user_id, conn_id=who.conn_id):
            return await self.close(code=protocol.CLOSE_TOO_MANY_SOCKETS)
        self.who = who
        self.conn_id, self.room_id = self.who.conn_id, self.who.room_id
        logcontext.conn_id.set(self.conn_id)  # this connection's task: its log lines carry the id
        self.user_id, self.username = self.who.user_id, self.who.username
        # Before joining the hub: logout and a new password name the sockets to close by these.
        self.session_tag, self.auth_tag = accounts.socket_tags(self.scope)
        accounts.socket_scope_release(self.scope)
        # Archived / blocked, for refusals without a query per frame: as read with the room, and
        # read again when something may have changed before the hub began passing changes on.
        self.gate = rooms.RoomGate(archived=who.archived, blocked=who.blocked)
        hub = get_hub()
        await hub.join(self)
        if hub.changed_since(who.mark, room_id=self.room_id, user_id=self.user_id):
            try:
                await presence.participant_recheck(who)
            except ChatError as exc:
                code = protocol.CLOSE_NOT_FOUND if exc.code == "not_found" else protocol.CLOSE_FORBIDDEN
                return await self.close(code=code)
            self.gate.load(archived=who.archived, blocked=who.blocked)
        hello = await presence.presence_arrive(who)  # enters presence first: its online list includes this user
        self.present = True
        hello.update(protocol.standing_fields(muted_until=self._muted_until()))  # a mute that holds now
        self.push(hello)
        self._greeted = True
        after = _query_int(self.scope, "after")
        if after is not None:
            self._start_replay(after)
        else:
            self._release_held()
        # A public room opened joined the user's sidebar with the read (presence.participant_join);
        # the sidebar's own frames come once the client asks (sidebar.watch), so a client that
        # speaks only contract §4 gets only its frames.

    async def disconnect(self, code):
        await asyncio.shield(self._cleanup())

    def _cleanup(self) -> asyncio.Task:
        """The socket's cleanup, once, in a task of its own that a cancelled consumer does not cut short."""
        if self._leaving is None:
            self._leaving = asyncio.ensure_future(self._leave())
            _cleanups.add(self._leaving)
            self._leaving.add_done_callback(_cleanups.discard)
        return self._leaving

    async def _leave(self) -> None:
        if self._counted:
            metrics.CONNECTIONS.dec()
            self._counted = False
        if self._writer is not None:
            self._writer.cancel()
        if self._replay_task is not None:
            self._replay_task.cancel()
        if self._sends is not None:  # its acks under way still go out; dropped, it holds no cycle with us
            self._sends.cancel()
            self._sends = None
        if self.who is not None:
            self.present = False
            await get_hub().leave(self)
            await self.sidebar_unwatch()
            try:
                await limits.socket_release(user_id=self.who.user_id, conn_id=self.who.conn_id)
                await presence.presence_exit(self.who)
            except Exception:  # noqa: BLE001 - a dying socket must not raise; the entries expire anyway
                logger.warning("presence exit failed for %s; the entries expire on their own", self.who.conn_id)

    # --- inbound frames ---

    async def receive(self, text_data=None, bytes_data=None):
        if self.who is None:
            return
        if bytes_data is not None:
            return await self.close(code=protocol.CLOSE_UNSUPPORTED)
        if len(text_data) > protocol.MAX_FRAME_BYTES or len(text_data.encode()) > protocol.MAX_FRAME_BYTES:
            return await self.close(code=protocol.CLOSE_TOO_BIG)
        client_id, frame = None, None
        try:
            frame = protocol.parse(text_data)
            metrics.FRAMES_IN.labels(type=frame.type).inc()
            client_id = frame.fields.get("client_id")
            await getattr(self, "on_" + frame.type.replace(".", "_"))(**frame.fields)
        except protocol.ProtocolError as exc:
            metrics.FRAMES_IN.labels(type="invalid").inc()
            self.push(protocol.error_frame(code=exc.code, detail=exc.detail))
        except (ChatError, *sending.SEND_FAILURES) as exc:
            self.push(self._error_for(exc, client_id, frame.type if frame else "a"))

    def _error_for(self, exc: Exception, client_id: str | None, frame_type: str) -> dict:
        """The error frame for a frame an action refused, or a store failed (a Redis pool exhausted,
        a shard or Postgres away: the socket stays, and the client may retry; a send keeps its client_id)."""
        if isinstance(exc, ChatError):
            if exc.code == "rate_limited":
                metrics.RATE_LIMITED.inc()
            return protocol.error_frame(code=exc.code, detail=exc.detail, retry_after=exc.retry_after,
                                        client_id=client_id)
        logger.warning("%s frame of %s not served: %s: %s", frame_type, self.conn_id, type(exc).__name__, exc)
        return protocol.error_frame(code=protocol.ERROR_UNAVAILABLE, client_id=client_id,
                                    detail="The chat could not do this just now; try again in a moment.",
                                    retry_after=protocol.UNAVAILABLE_RETRY_AFTER)

    async def on_message_send(self, body: str, client_id: str, reply_to: str | None = None,
                              attachments: list | tuple = ()):
        if self._sends is None:
            self._sends = sending.SocketSends(self.who, push=self.push, refused=self._send_refused)
        self._sends.queue(sending.SendRequest(body, client_id, reply_to, tuple(attachments)), gate=self.gate)

    def _send_refused(self, exc: Exception, client_id: str) -> None:
        self.push(self._error_for(exc, client_id, "message.send"))

    async def on_sidebar_watch(self):
        if not self._sidebar_asked:  # once a socket: a repeat costs nothing
            self._sidebar_asked = True
            await self.sidebar_watch()

    async def on_message_edit(self, id: str, body: str):
        await messages.message_edit(who=self.who, message_id=id, body=body, gate=self.gate)

    async def on_message_delete(self, id: str):
        await messages.message_delete(who=self.who, message_id=id, gate=self.gate)

    async def on_reaction_add(self, id: str, emoji: str):
        await reactions.reaction_change(who=self.who, message_id=id, glyph=emoji, add=True, gate=self.gate)

    async def on_reaction_remove(self, id: str, emoji: str):
        await reactions.reaction_change(who=self.who, message_id=id, glyph=emoji, add=False, gate=self.gate)

    async def on_message_report(self, id: str, reason: str):
        await messages.message_report(who=self.who, message_id=id, reason=reason)

    async def on_typing(self, active: bool):
        await presence.typing_notify(who=self.who, active=active)

    async def on_resume(self, after: int):
        await limits.rate_take(user_id=self.user_id, kind="resume")
        self._start_replay(after)

    async def on_read(self, seq: int):
        await presence.read_mark(who=self.who, seq=seq)

    async def on_ping(self):
        self.push(protocol.pong_frame())

    # --- outbound frames (called by the hub, synchronously, in its fan-out loop) ---

    def deliver(self, texts: tuple[str, ...], seqs: tuple[int | None, ...]) -> None:
        """Room frames from the hub: one frame (its seq set for a message frame only), or a run of
        message frames the hub received together, in seq order, written to the socket at once."""
        if seqs[0] is None and texts[0].startswith(protocol.ROOM_STATE_PREFIXES):  # the room changed
            self.gate.apply(orjson.loads(texts[0]))
        if self._held is not None:
            self._held.extend(zip(seqs, texts, strict=True))
            self._held_bytes += sum(map(len, texts))
            if self._held_bytes > settings.CHAT_SOCKET_BUFFER_BYTES:  # a replay it does not read
                self._cut_slow()
        elif seqs[0] is None or self._sent_seq is None or seqs[0] > self._sent_seq:
            if seqs[-1] is not None:
                self._sent_seq = seqs[-1]
            self._enqueue(texts)
        else:  # some of them went out with a replay
            for seq, text in zip(seqs, texts, strict=True):
                self._send_live(text, seq)

    def close_with(self, code: int) -> None:
        if not self._closing:
            self._closing = True
            self._close_task = asyncio.ensure_future(self.close(code=code))

    def set_muted_until(self, until) -> None:
        """Staff muted or unmuted the user (the hub's `user.standing`): sends check it, the client
        hears it (unless hello, still to come, says it)."""
        if self.who is not None:
            self.who.muted_until = until
            if self._greeted:
                self.push(protocol.standing_frame(muted_until=self._muted_until()))

    def _muted_until(self):
        until = self.who.muted_until
        return until if permissions.is_muted(until) else None

    def push(self, frame: dict) -> None:
        metrics.FRAMES_OUT.labels(type=frame["type"]).inc()
        if frame["type"] == "error":
            metrics.ERRORS_SENT.labels(code=frame["code"]).inc()
        self._enqueue((protocol.encode(frame),))

    async def close(self, code=None, reason=None):
        metrics.CLOSES.labels(code=str(code or 1000)).inc()
        await super().close(code=code, reason=reason)

    def _enqueue(self, texts: tuple[str, ...], *, counted: bool = True) -> None:
        if self._closing:
            return
        outbox = self._outbox
        if not outbox and self._write_now is not None and self._unsent_bytes() <= SOCKET_HIGH_WATER:
            return self._write_now(texts)  # nothing queued before them and room in the transport: no task
        weight = sum(map(len, texts)) if counted else 0
        if self._outbox_bytes + weight > settings.CHAT_SOCKET_BUFFER_BYTES:
            return self._cut_slow()
        if outbox is None:
            outbox = self._outbox = deque()
            if self._drained is None:
                self._drained = asyncio.Event()
        outbox.append((texts, weight))
        self._outbox_bytes += weight
        self._drained.clear()
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_loop())

    def _cut_slow(self) -> None:
        logger.info("closing %s: not reading, over %d bytes queued", getattr(self, "conn_id", "?"),
                    settings.CHAT_SOCKET_BUFFER_BYTES)
        if self._outbox is not None:
            self._outbox.clear()
        self._outbox_bytes = 0
        if self._held is not None:
            self._held, self._held_bytes = [], 0
        metrics.SLOW_CONSUMER_CUTS.inc()
        self.close_with(protocol.CLOSE_SLOW_CONSUMER)

    async def _write_loop(self) -> None:
        """Send what is queued, then end: the next frame that has to wait starts another."""
        outbox = self._outbox
        while outbox:
            if self._unsent_bytes is not None and self._unsent_bytes() > SOCKET_HIGH_WATER:
                await asyncio.sleep(0.01)  # the client reads slower than we write: let it catch up
                continue
            texts, weight = outbox.popleft()
            self._outbox_bytes -= weight
            for text in texts:
                await self.base_send({"type": "websocket.send", "text": text})
        self._writer = self._outbox = None
        self._drained.set()

    def _start_replay(self, after: int) -> None:
        """Replay beside the frame loop, so the socket's other frames (and its close) are handled
        meanwhile; a new resume replaces a replay under way, keeping the live frames held for it."""
        if self._held is None:
            self._held, self._held_bytes = [], 0
        if self._replay_task is not None:
            self._replay_task.cancel()
        self._replay_task = asyncio.ensure_future(self._replay(after))

    async def _replay(self, after: int) -> None:
        """Every message after `after`, a page at a time, then the live frames held meanwhile,
        without duplicates."""
        last = after
        try:
            async for page in messages.messages_since(who=self.who, after=after):
                if page:
                    metrics.FRAMES_OUT.labels(type="message").inc(len(page))
                    self._enqueue(tuple(protocol.encode(frame) for frame in page), counted=False)
                    last = page[-1]["seq"]
                if self._drained is not None:  # the next page once the writer has sent this one
                    await self._drained.wait()
                if self._closing:
                    return
        except messages.ReplayIncomplete as exc:  # the client resumes from what it got, a little later
            logger.warning("replay for %s stopped: %s", self.conn_id, exc)
            return self.close_with(protocol.CLOSE_SERVICE_RESTART)
        except Exception:  # Postgres or Redis failed mid-replay: the client resumes from what it got
            logger.exception("replay for %s failed", self.conn_id)
            return self.close_with(protocol.CLOSE_SERVICE_RESTART)
        self._sent_seq = max(last, self._sent_seq or 0)
        self._release_held()
        self.push(protocol.resumed_frame(last_seq=self._sent_seq))

    def _release_held(self) -> None:
        held, self._held, self._held_bytes = self._held or [], None, 0
        for seq, text in held:
            self._send_live(text, seq)

    def _send_live(self, text: str, seq: int | None) -> None:
        # Messages come live in seq order, but one published while the replay read the buffer can
        # arrive live after the replay sent it (and after the held frames went): skip what went out.
        if seq is not None:
            if self._sent_seq is not None and seq <= self._sent_seq:
                return
            self._sent_seq = seq
        self._enqueue((text,))


def _query_int(scope, name: str) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode()).get(name)
    try:
        return min(max(0, int(values[0])), protocol.MAX_SEQ) if values else None
    except ValueError:
        return None
