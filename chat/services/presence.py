"""Who is in a room: joining, the hello frame, the online list, typing, read marks, and the rooms
of a user's sidebar."""

import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings

from chat import drain, protocol, selectors
from chat.batching import ThreadBatch, batch_sync_to_async
from chat.errors import ChatError
from chat.models import ReadState
from chat.roomstate import room_state
from chat.services.events import after_commit, hub_event, room_broadcast, sidebar_changed
from chat.services.limits import joins_crowded, rate_take
from chat.services.rooms import room_gate_blocked

logger = logging.getLogger(__name__)

@dataclass(slots=True)
class Participant:
    """One socket's user in one room, as the socket path knows them."""

    user_id: int
    username: str
    is_staff: bool
    room_id: int
    room_slug: str
    room_name: str
    room_private: bool
    muted_until: object = None
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Read with the room, for the socket's RoomGate; `mark`: the hub's serial when they were read.
    archived: bool = False
    blocked: bool = False
    mark: int = 0


async def participant_join(*, user, slug: str) -> Participant:
    """Who is joining where, or NotFound / Forbidden. Joins that arrive together are read together
    (`_JoinReads`); a public room opened for the first time joins the user's sidebar meanwhile."""
    facts, mark = await _join_reads().read(user.id, slug)
    room = facts["room"]
    return Participant(
        user_id=user.id,
        username=user.username,
        is_staff=user.is_staff,
        room_id=room["id"],
        room_slug=room["slug"],
        room_name=room["name"],
        room_private=room["private"],
        muted_until=facts["muted_until"],
        archived=room["archived"],
        blocked=facts["blocked"],
        mark=mark,
    )


async def participant_recheck(who: Participant) -> None:
    """Read again what `participant_join` read, once the socket is in the hub (whose events keep it
    current from then on): raises NotFound / Forbidden when the user may no longer join."""
    facts, mark = await _join_reads().read(who.user_id, who.room_slug)
    who.muted_until, who.archived, who.blocked, who.mark = (facts["muted_until"], facts["room"]["archived"],
                                                            facts["blocked"], mark)


class _JoinReads:
    """The database reads of joins, one thread hop for every join that arrives while the previous
    hop runs: a storm of reconnects costs a few queries per batch instead of several per socket
    (selectors.room_for_socket)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[int, str, asyncio.Future]] = []
        self.running: asyncio.Task | None = None

    async def read(self, user_id: int, slug: str) -> tuple[dict, int]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((user_id, slug, future))
        if self.running is None:
            self.running = asyncio.ensure_future(self._run())  # next turn: the joins of this turn come along
        facts, mark = await future
        if isinstance(facts, ChatError):
            raise facts
        return facts, mark

    async def _run(self) -> None:
        from chat.hub import get_hub

        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                mark = get_hub().mark()
                try:
                    results = await _joins_read_off_loop([(u, slug) for u, slug, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every join of the batch hears it
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its socket went meanwhile
                        future.set_result((result, mark))
        finally:
            self.running = None


_readers: dict = {}


def _join_reads() -> _JoinReads:
    loop = asyncio.get_running_loop()
    reads = _readers.get(loop)
    if reads is None:
        reads = _readers[loop] = _JoinReads()
    return reads


def _joins_read(requests: list[tuple[int, str]]) -> list[dict | ChatError]:
    """selectors.room_for_socket, plus each DM's block and, for public rooms opened for the first
    time, the read state at 0 that puts them in the user's sidebar (told to the user's sockets)."""
    results = selectors.room_for_socket(requests)
    opened: set[tuple[int, int]] = set()
    for (user_id, _), facts in zip(requests, results, strict=True):
        if isinstance(facts, ChatError):
            continue
        room = facts["room"]
        facts["blocked"] = room_gate_blocked(user_id=user_id, direct_key=room["direct_key"])
        if not room["private"] and not facts["opened"]:
            opened.add((room["id"], user_id))
    if opened:
        # Not a Membership: that would make the user a member should the room be made private. A
        # join on another instance may have made it meanwhile: its sidebars refresh twice, harmless.
        ReadState.objects.bulk_create([ReadState(room_id=room_id, user_id=user_id, seq=0)
                                       for room_id, user_id in opened], ignore_conflicts=True)
        after_commit(sidebar_changed, user_ids=sorted({user_id for _, user_id in opened}))
    return results


_joins_read_off_loop = batch_sync_to_async(_joins_read)


async def room_last_seq(room_id: int) -> int:
    """The room's newest seq: Redis's counter, or Postgres when Redis has none."""
    last_seq = await room_state().last_seq(room_id)
    if last_seq is None:
        last_seq = await _rooms_max_seq(room_id)
    return last_seq


# A storm's joins to rooms Redis holds no seq for (never written to, or evicted) read them together.
_rooms_max_seq = ThreadBatch(selectors.rooms_max_seq)


async def hello_for(who: Participant, *, last_seq: int | None = None, online: list[str] | None = None) -> dict:
    return protocol.hello_frame(
        room={"slug": who.room_slug, "name": who.room_name, "private": who.room_private},
        user={"id": who.user_id, "username": who.username},
        last_seq=last_seq if last_seq is not None else await room_last_seq(who.room_id),
        online=online if online is not None else await room_state().presence_online(who.room_id),
    )


async def presence_arrive(who: Participant) -> dict:
    """The socket enters the room's presence (announced when its user was not online there), and
    its hello, whose online list includes the user: one call to the room's shard for all three."""
    new, seq, online = await room_state().presence_join(who.room_id, who.conn_id, who.username)
    if new:
        await presence_announce(who.room_id)
    if seq is None:  # no counter on the shard: Postgres
        seq = await _rooms_max_seq(who.room_id)
    return await hello_for(who, last_seq=seq, online=online)


async def presence_exit(who: Participant) -> None:
    if await room_state().presence_leave(who.room_id, who.conn_id, who.username):
        announced = _announcer().schedule(who.room_id)
        if drain.is_draining():
            # The process exits once its sockets' cleanups end: announce the leave before then.
            await asyncio.wait({announced})


async def presence_announce(room_id: int) -> None:
    """Tell the room's sockets on every instance who is online, once the room's changes of the next
    CHAT_PRESENCE_COALESCE_SECONDS are in (`_Announcer`); returns without waiting for it."""
    _announcer().schedule(room_id)


class _Announcer:
    """A process's presence announcements: per room at most one waiting or running, which reads
    the online list when it runs, so a burst of joins and leaves is one frame of the newest list
    instead of a frame per change to every socket in the room."""

    def __init__(self) -> None:
        self.changed: set[int] = set()  # rooms changed since their announcement last began reading
        self.tasks: dict[int, asyncio.Task] = {}  # kept until done: the loop holds tasks weakly

    def schedule(self, room_id: int) -> asyncio.Task:
        self.changed.add(room_id)
        task = self.tasks.get(room_id)
        if task is None:
            task = self.tasks[room_id] = asyncio.ensure_future(self._run(room_id))
        return task

    async def _run(self, room_id: int) -> None:
        try:
            while room_id in self.changed:
                window = coalesce_window()
                if window > 0:
                    await asyncio.sleep(window)
                # Cleared before the read: a change from here on is after it and gets a round of its own.
                self.changed.discard(room_id)
                try:
                    await room_state().presence_announce(room_id)
                except Exception as exc:  # noqa: BLE001 - the room's next change announces again
                    logger.warning("presence of room %s not announced (%r); its next change tries again",
                                   room_id, exc)
        finally:
            self.tasks.pop(room_id, None)


def coalesce_window() -> float:
    """Seconds a room's presence changes gather before one frame goes out. Draining: none, the leaves
    go out before the process exits. During a reconnect storm (`joins_crowded`): longer, since every
    frame is a write to each socket in the room, and the online list can wait where joins cannot."""
    if drain.is_draining():
        return 0
    if joins_crowded():
        return settings.CHAT_PRESENCE_CROWDED_COALESCE_SECONDS
    return settings.CHAT_PRESENCE_COALESCE_SECONDS


_announcers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _announcer() -> _Announcer:
    loop = asyncio.get_running_loop()
    announcer = _announcers.get(loop)
    if announcer is None:
        announcer = _announcers[loop] = _Announcer()
    return announcer


async def typing_notify(*, who: Participant, active: bool) -> None:
    """Relay "typing" to the others, never stored: at most one start and one stop per user and room
    every CHAT_TYPING_THROTTLE (the rest are dropped), and no more frames than the user's rate."""
    await rate_take(user_id=who.user_id, kind="typing")
    if not await room_state().typing_allow(who.room_id, who.user_id, active, settings.CHAT_TYPING_THROTTLE):
        return
    await room_broadcast(who.room_id, protocol.typing_frame(user=who.username, active=active), exclude=who.conn_id)


async def read_mark(*, who: Participant, seq: int) -> None:
    """Mark the room read up to `seq` (never backwards, never past the newest message) and tell the
    user's other sockets in the room, and their sidebars elsewhere, on every instance."""
    await rate_take(user_id=who.user_id, kind="read")
    seq = min(seq, await room_last_seq(who.room_id))
    if await database_sync_to_async(read_state_advance)(user_id=who.user_id, room_id=who.room_id, seq=seq):
        await hub_event({"type": "user.frame", "user": who.user_id, "room": who.room_id, "exclude": who.conn_id,
                         "text": protocol.encode(protocol.read_frame(seq=seq))})
        # The user's sidebars elsewhere (other rooms' pages, the home page) drop the room's counts.
        await hub_event({"type": "user.sidebar", "users": [who.user_id], "room": who.room_id,
                         "text": protocol.encode(protocol.sidebar_read_frame(room=who.room_slug, seq=seq))})


def read_state_advance(*, user_id: int, room_id: int, seq: int) -> bool:
    """Move the read mark forward to `seq`; False when it was there or further already."""
    state, created = ReadState.objects.get_or_create(user_id=user_id, room_id=room_id, defaults={"seq": seq})
    if created:
        return seq > 0
    return ReadState.objects.filter(pk=state.pk, seq__lt=seq).update(seq=seq) > 0


async def sidebar_rooms(*, user_id: int) -> dict[int, bool]:
    """The rooms of the user's sidebar (room id -> is a DM), for the hub's watch."""
    return await database_sync_to_async(selectors.sidebar_rooms)(user_id)
