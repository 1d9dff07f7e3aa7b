"""Rooms: create, rename and archive them, open direct messages, add and remove members (a member
leaving too), end access that was lost, seed a room's sequence."""

import itertools
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from chat import permissions, protocol, selectors
from chat.errors import ChatError, Conflict, Forbidden, NotFound
from chat.models import DM_SLUG_PREFIX, Deployment, Membership, ReadState, Room
from chat.roomstate import room_state
from chat.services import blocks
from chat.services.events import after_commit, room_broadcast, sidebar_changed, sockets_close
from chat.services.text import without_nul


def _room_name_clean(name: str) -> str:
    name = without_nul(name or "").strip()
    if not name or len(name) > 120:
        raise ChatError("A room needs a name of 1 to 120 characters.", code="invalid")
    return name


def room_create(*, owner, name: str, private: bool, slug: str | None = None) -> Room:
    name = _room_name_clean(name)
    chosen = slug is not None
    slug = slugify(slug if chosen else name)[:64]
    if not slug:
        raise ChatError("The room's slug must contain letters or digits.", code="invalid")
    if slug.startswith(DM_SLUG_PREFIX):
        if chosen:
            raise ChatError(f"Slugs starting with '{DM_SLUG_PREFIX}' are kept for direct messages; pick another.",
                            code="invalid")
        slug = f"room-{slug}"[:64]  # a name is not refused for the slug it would make
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, name=name, private=private, owner=owner)
            Membership.objects.create(room=room, user=owner, role=Membership.Role.OWNER)
    except IntegrityError:
        raise Conflict(f"A room with the slug '{slug}' exists already.", code="slug_taken") from None
    return room


def dm_open(*, actor, username: str) -> tuple[Room, bool]:
    """The one private two-member room of a pair (the same whoever asks); True when just created."""
    other = get_user_model().objects.filter(username=without_nul(username)).first()
    if other is None:
        raise NotFound(f"No user '{username}'.")
    if other.pk == actor.pk:
        raise ChatError("A direct message needs another user.", code="invalid")
    if blocks.is_blocked(blocker_id=other.pk, blocked_id=actor.pk):
        raise Forbidden(f"{other.username} has blocked you: you cannot message them.", code=protocol.ERROR_BLOCKED)
    low, high = sorted([actor, other], key=lambda user: user.pk)
    key = f"{low.pk}:{high.pk}"
    for _ in range(3):
        room = Room.objects.filter(direct_key=key).first()
        if room is not None:
            return room, False
        try:
            with transaction.atomic():
                room = Room.objects.create(slug=_dm_slug(low.pk, high.pk), name=f"{low.username} & {high.username}",
                                           private=True, direct_key=key)
                Membership.objects.bulk_create([Membership(room=room, user=low), Membership(room=room, user=high)])
        except IntegrityError:  # the other one asked at the same moment, or another room took the slug
            continue
        after_commit(sidebar_changed, user_ids=[low.pk, high.pk])  # it appears in both sidebars
        return room, True
    raise Conflict("The direct message could not be opened just now; try again.", code="slug_taken")


def _dm_slug(low_id: int, high_id: int) -> str:
    """`dm-<low>-<high>`, or the first free `dm-<low>-<high>-<n>`: rooms created before the namespace
    was kept for DMs may hold it."""
    natural = f"{DM_SLUG_PREFIX}{low_id}-{high_id}"
    taken = set(Room.objects.filter(slug__startswith=natural).values_list("slug", flat=True))
    candidates = itertools.chain([natural], (f"{natural}-{n}" for n in itertools.count(2)))
    return next(slug for slug in candidates if slug not in taken)


def room_add_member(*, actor, room: Room, username: str) -> Membership:
    if room.direct_key:
        raise Forbidden("A direct-message room has exactly its two members.")
    if not permissions.can_manage_members(actor, room):
        raise Forbidden("Only the room's owner or staff may add members.")
    user = get_user_model().objects.filter(username=without_nul(username)).first()
    if user is None:
        raise NotFound(f"No user '{username}'.")
    membership, created = Membership.objects.get_or_create(room=room, user=user)
    if created:
        after_commit(sidebar_changed, user_ids=[user.pk])
    return membership


def _room_to_manage(*, actor, slug: str, refusal: str) -> Room:
    """The room, when `actor` may manage it (owner or staff); NotFound when they may not even see
    it, else Forbidden with `refusal`."""
    room = Room.objects.filter(slug=slug).first()
    manages = room is not None and permissions.can_manage_members(actor, room)
    # Managing is not reading: staff need not read a private room to manage it.
    if room is None or not (manages or permissions.readable_rooms(actor).filter(pk=room.pk).exists()):
        raise NotFound(f"No room '{slug}'.")
    if not manages:
        raise Forbidden(refusal)
    return room


def room_remove_member(*, actor, slug: str, username: str) -> None:
    """Remove a member (owner or staff), or leave the room (`username` is the actor's own). The
    Membership post_delete receiver then ends their sockets in the room if they may no longer read
    it, whichever path deleted the row (the admin's too)."""
    if without_nul(username) == actor.get_username():
        room = permissions.readable_rooms(actor).filter(slug=slug).first()
        if room is None:
            raise NotFound(f"No room '{slug}'.")
        return room_leave(actor=actor, room=room)
    room = _room_to_manage(actor=actor, slug=slug, refusal="Only the room's owner or staff may remove members.")
    if room.direct_key:
        raise Forbidden("A direct-message room has exactly its two members.")
    membership = Membership.objects.filter(room=room, user__username=without_nul(username)).first()
    if membership is None:
        raise NotFound(f"'{username}' is not a member of this room.")
    if membership.user_id == room.owner_id:
        raise Forbidden("The room's owner stays a member.")
    membership.delete()


def room_leave(*, actor, room: Room) -> None:
    """`actor` leaves `room`: their membership and read state go, so it leaves their sidebar (a public
    room opened joins it through its read state alone). The owner is refused (a room keeps its
    owner: staff hand it over in the admin), and so is a direct message (block instead)."""
    if room.direct_key:
        raise Forbidden("A direct message cannot be left; block the user to stop their messages.")
    if room.owner_id == actor.pk:
        raise Forbidden("You own this room, so you cannot leave it; archive it instead, or ask staff to hand "
                        "it to another member first.", code="owner_cannot_leave")
    with transaction.atomic():
        # The membership's delete ends a private room's sockets and tells the sidebars (receivers).
        members, _ = Membership.objects.filter(room=room, user=actor).delete()
        marks, _ = ReadState.objects.filter(room=room, user=actor).delete()
        if not (members or marks):
            raise NotFound("You are not a member of this room.")
        if not members:
            after_commit(sidebar_changed, user_ids=[actor.pk])


def room_update(*, actor, slug: str, name: str | None = None, archived: bool | None = None) -> Room:
    """Rename and/or archive (or unarchive) a room (owner or staff); once committed, the room's
    sockets on every instance get `room.updated`."""
    room = _room_to_manage(actor=actor, slug=slug, refusal="Only the room's owner or staff may change the room.")
    if room.direct_key:
        raise Forbidden("A direct message cannot be renamed or archived.")
    fields = []
    if name is not None:
        room.name = _room_name_clean(name)
        fields.append("name")
    if archived is not None:
        room.archived = archived
        fields.append("archived")
    if not fields:
        raise ChatError("Send 'name' (str) and/or 'archived' (bool).", code="invalid")
    room.save(update_fields=fields)
    after_commit(room_broadcast, room_id=room.pk,
                 frame=protocol.room_updated_frame(slug=room.slug, name=room.name, archived=room.archived))
    return room


def room_member_list(*, room: Room) -> list[dict]:
    """The room's members by username, with their role."""
    rows = Membership.objects.filter(room=room).select_related("user").order_by("user__username")
    return [{"username": m.user.username, "role": m.role} for m in rows]


@dataclass(slots=True)
class RoomGate:
    """What one socket may still change in its room, kept on the socket so the send path asks no
    database: read when it connects, then kept current by the `room.updated` and `dm.state` frames
    that pass through it."""

    archived: bool = False
    blocked: bool = False  # in a DM: the other member blocked this user
    live: frozenset[str] = frozenset()  # what a frame set: newer than a load still under way

    def check(self) -> None:
        """Raise the refusal for a send, edit, delete (or reaction) while the room is read-only."""
        if self.archived:
            raise Forbidden("This room is archived: it is read-only.", code=protocol.ERROR_ROOM_ARCHIVED)
        if self.blocked:
            raise Forbidden("This user has blocked you: you cannot write to them.", code=protocol.ERROR_BLOCKED)

    def apply(self, frame: dict) -> None:
        if frame["type"] == "room.updated":
            self.archived = bool(frame["room"]["archived"])
            self.live |= {"archived"}
        elif frame["type"] == "dm.state":
            self.blocked = bool(frame["blocked"])
            self.live |= {"blocked"}

    def load(self, *, archived: bool, blocked: bool) -> None:
        """What a read from the database says, unless a frame since said otherwise."""
        if "archived" not in self.live:
            self.archived = archived
        if "blocked" not in self.live:
            self.blocked = blocked


async def room_gate_load(*, gate: RoomGate, user_id: int, room_id: int) -> None:
    """Fill `gate` from the database (a socket calls it once subscribed, so no change is missed)."""
    archived, blocked = await database_sync_to_async(_gate_state)(user_id, room_id)
    gate.load(archived=archived, blocked=blocked)


def _gate_state(user_id: int, room_id: int) -> tuple[bool, bool]:
    room = Room.objects.filter(pk=room_id).values("archived", "direct_key").first()
    if room is None:
        return False, False
    return room["archived"], room_gate_blocked(user_id=user_id, direct_key=room["direct_key"])


def room_gate_blocked(*, user_id: int, direct_key: str | None) -> bool:
    """Whether the room is a DM whose other member blocked `user_id`."""
    return bool(direct_key) and blocks.dm_blocked(user_id=user_id, direct_key=direct_key)


def room_is_going_private(*, room: Room, update_fields) -> bool:
    """Whether saving `room` now makes a public room private (asked before the save)."""
    if room.pk is None or not room.private or (update_fields is not None and "private" not in update_fields):
        return False
    return Room.objects.filter(pk=room.pk, private=False).exists()


def room_access_check(*, room_id: int, user_ids: list[int] | None = None) -> None:
    """Once committed, the sockets in the room of those who may no longer read it close with 4403 on
    every instance: of `user_ids`, or of everyone online there (the room became private)."""
    after_commit(room_access_end, room_id=room_id, user_ids=user_ids)


async def room_access_end(*, room_id: int, user_ids: list[int] | None = None) -> None:
    usernames = None if user_ids is not None else await room_state().presence_online(room_id)
    for user_id in await database_sync_to_async(_readers_lost)(room_id, user_ids, usernames):
        await sockets_close(user_id=user_id, code=protocol.CLOSE_FORBIDDEN, room_id=room_id)
    if user_ids:  # memberships that ended (removed, left): the room leaves their sidebars
        await sidebar_changed(user_ids=user_ids)


def _readers_lost(room_id: int, user_ids: list[int] | None, usernames: list[str] | None) -> list[int]:
    users = get_user_model().objects.filter(**({"pk__in": user_ids} if user_ids is not None
                                               else {"username__in": usernames}))
    return [user.pk for user in users if not permissions.readable_rooms(user).filter(pk=room_id).exists()]


def room_seq_seed(*, room_id: int) -> int:
    """Where a room's Redis counter restarts when it has none.

    A brand-new room starts after what Postgres holds. A room that handed out seqs before may have
    messages still in Kafka, so it restarts above both Postgres and the clock in microseconds: more
    than any count of messages a room could have been sent since its counter last started.
    """
    with transaction.atomic():
        room = Room.objects.select_for_update().get(id=room_id)
        seed = selectors.room_max_seq(room_id)
        if room.seq_started and settings.KAFKA_BOOTSTRAP_SERVERS:
            seed = max(seed, time.time_ns() // 1000)
        if not room.seq_started:
            room.seq_started = True
            room.save(update_fields=["seq_started"])
    return seed


def deployment_identity() -> str:
    """This database's deployment identity (chat.models.Deployment), created if missing."""
    deployment = Deployment.objects.order_by("id").first() or Deployment.objects.create()
    return str(deployment.identity)


def deployment_renew() -> str:
    """A new identity for this database, for the restore procedure (docs/operations.md)."""
    with transaction.atomic():
        Deployment.objects.all().delete()
        return str(Deployment.objects.create().identity)
