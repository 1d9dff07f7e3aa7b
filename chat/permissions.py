"""Who may see, join, post, edit and moderate: one function each, the only gate for each rule."""

from django.db.models import Q, QuerySet
from django.utils import timezone

from chat.models import ChatProfile, Membership, Message, Report, Room


def readable_rooms(user) -> QuerySet[Room]:
    """The rooms whose messages `user` may read: public rooms and the private rooms (direct messages
    included) they are a member of. Being staff adds none. The API, search, history, the socket,
    the room page and the admin all ask this."""
    return Room.objects.filter(Q(private=False) | Q(pk__in=Membership.objects.filter(user=user).values("room_id")))


def can_read_reported(user) -> bool:
    """Whether `user` may read a reported message, and the few around it, in a room they cannot read:
    staff who may act on reports (Django's `chat.change_report`)."""
    return user.is_active and user.is_staff and user.has_perm("chat.change_report")


def moderation_messages(user) -> QuerySet[Message]:
    """The messages the admin shows `user`: those of rooms they may read, plus the reported ones
    when they may act on reports."""
    readable = Q(room__in=readable_rooms(user).values("pk"))
    if can_read_reported(user):
        readable |= Q(pk__in=Report.objects.values("message_id"))
    return Message.objects.filter(readable)


def can_manage_members(user, room: Room) -> bool:
    return user.is_staff or (room.owner_id is not None and room.owner_id == user.id)


def can_change_message(user_id: int, is_staff: bool, author_id: int) -> bool:
    return is_staff or user_id == author_id


def is_banned(profile: ChatProfile | None) -> bool:
    return profile is not None and profile.banned


def is_muted(muted_until, now=None) -> bool:
    """Whether a mute set until `muted_until` (a ChatProfile's, or a socket's copy of it) holds now."""
    return muted_until is not None and muted_until > (now or timezone.now())
