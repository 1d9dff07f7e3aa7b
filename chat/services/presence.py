"""Who is in a room: joining, the hello frame, the online list, typing, read marks, and the rooms
of a user's sidebar."""

import uuid
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings

from chat import protocol, selectors
from chat.models import ReadState
from chat.roomstate import room_state
from chat.services.events import after_commit, hub_event, room_broadcast, sidebar_changed
from chat.services.limits import rate_take


@dataclass
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


async def participant_join(*, user, slug: str) -> Participant:
    """Who is joining where, or NotFound / Forbidden."""
    room, profile = await database_sync_to_async(selectors.room_for_socket)(user, slug)
    return Participant(
        user_id=user.id,
        username=user.username,
        is_staff=user.is_staff,
        room_id=room.id,
        room_slug=room.slug,
        room_name=room.name,
        room_private=room.private,
        muted_until=profile.muted_until if profile else None,
    )


async def room_last_seq(room_id: int) -> int:
    """The room's newest seq: Redis's counter, or Postgres when Redis has none."""
    last_seq = await room_state().last_seq(room_id)
    if last_seq is None:
        last_seq = await database_sync_to_async(selectors.room_max_seq)(room_id)
    return last_seq


async def hello_for(who: Participant) -> dict:
    return protocol.hello_frame(
        room={"slug": who.room_slug, "name": who.room_name, "private": who.room_private},
        user={"id": who.user_id, "username": who.username},
        last_seq=await room_last_seq(who.room_id),
        online=await room_state().presence_online(who.room_id),
    )


async def presence_enter(who: Participant) -> None:
    if await room_state().presence_join(who.room_id, who.conn_id, who.username):
        await presence_announce(who.room_id)


async def presence_exit(who: Participant) -> None:
    if await room_state().presence_leave(who.room_id, who.conn_id, who.username):
        await presence_announce(who.room_id)


async def presence_announce(room_id: int) -> None:
    online = await room_state().presence_online(room_id)
    await room_broadcast(room_id, protocol.presence_frame(online=online))


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


async def room_visit(who: Participant) -> None:
    """A socket opened its room: a public room joins the user's sidebar the first time (a read
    state at 0: opened, nothing read yet), and the user's other sockets show it too."""
    if not who.room_private:
        await database_sync_to_async(_room_visit)(who.user_id, who.room_id)


def _room_visit(user_id: int, room_id: int) -> None:
    # Not a Membership: that would make the user a member should the room be made private.
    _, created = ReadState.objects.get_or_create(room_id=room_id, user_id=user_id, defaults={"seq": 0})
    if created:
        after_commit(sidebar_changed, user_ids=[user_id])
