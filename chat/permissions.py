"""Who may see, join, post, edit and moderate: one function each, the only gate for each rule."""

from django.utils import timezone

from chat.models import ChatProfile, Membership, Room


def can_read_room(user, room: Room) -> bool:
    if not room.private or user.is_staff:
        return True
    return Membership.objects.filter(room=room, user=user).exists()


def can_manage_members(user, room: Room) -> bool:
    return user.is_staff or (room.owner_id is not None and room.owner_id == user.id)


def can_change_message(user_id: int, is_staff: bool, author_id: int) -> bool:
    return is_staff or user_id == author_id


def is_banned(profile: ChatProfile | None) -> bool:
    return profile is not None and profile.banned


def is_muted(muted_until, now=None) -> bool:
    return muted_until is not None and muted_until > (now or timezone.now())
