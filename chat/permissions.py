"""Who may see, join, post, edit and moderate: one function each, the only gate for each rule."""

from django.db.models import Q, QuerySet
from django.utils import timezone

from chat.models import ChatProfile, Membership, Room


def readable_rooms(user) -> QuerySet[Room]:
    """The rooms whose messages `user` may read: public rooms and the private rooms (direct messages
    included) they are a member of; staff read every room. The API, search, history, the socket and
    the admin all ask this."""
    if user.is_staff:
        return Room.objects.all()
    return Room.objects.filter(Q(private=False) | Q(pk__in=Membership.objects.filter(user=user).values("room_id")))


def can_manage_members(user, room: Room) -> bool:
    return user.is_staff or (room.owner_id is not None and room.owner_id == user.id)


def can_change_message(user_id: int, is_staff: bool, author_id: int) -> bool:
    return is_staff or user_id == author_id


def is_banned(profile: ChatProfile | None) -> bool:
    return profile is not None and profile.banned


def is_muted(muted_until, now=None) -> bool:
    """Whether a mute set until `muted_until` (a ChatProfile's, or a socket's copy of it) holds now."""
    return muted_until is not None and muted_until > (now or timezone.now())
