"""Rooms: create them, open direct messages, add members, seed a room's sequence."""

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from chat import permissions, selectors
from chat.errors import ChatError, Conflict, Forbidden, NotFound
from chat.models import Membership, Room
from chat.services.text import without_nul


def room_create(*, owner, name: str, private: bool, slug: str | None = None) -> Room:
    name = without_nul(name or "").strip()
    if not name or len(name) > 120:
        raise ChatError("A room needs a name of 1 to 120 characters.", code="invalid")
    slug = slugify(slug if slug is not None else name)[:64]
    if not slug:
        raise ChatError("The room's slug must contain letters or digits.", code="invalid")
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
    low, high = sorted([actor, other], key=lambda user: user.pk)
    key = f"{low.pk}:{high.pk}"
    room = Room.objects.filter(direct_key=key).first()
    if room is not None:
        return room, False
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=f"dm-{low.pk}-{high.pk}", name=f"{low.username} & {high.username}",
                                       private=True, direct_key=key)
            Membership.objects.bulk_create([Membership(room=room, user=low), Membership(room=room, user=high)])
    except IntegrityError:  # the other one asked at the same moment
        return Room.objects.get(direct_key=key), False
    return room, True


def room_add_member(*, actor, room: Room, username: str) -> Membership:
    if room.direct_key:
        raise Forbidden("A direct-message room has exactly its two members.")
    if not permissions.can_manage_members(actor, room):
        raise Forbidden("Only the room's owner or staff may add members.")
    user = get_user_model().objects.filter(username=without_nul(username)).first()
    if user is None:
        raise NotFound(f"No user '{username}'.")
    membership, _ = Membership.objects.get_or_create(room=room, user=user)
    return membership


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
