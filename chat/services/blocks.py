"""Blocks: a user stops another from opening a direct message with them or writing in the one they
have, and the blocked user's mentions stop counting for them. Rooms both are in are unchanged: each
still sees the other's messages there (docs/protocol.md, "Blocking")."""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import transaction

from chat import protocol
from chat.errors import ChatError, NotFound
from chat.models import Block, Room
from chat.services.events import after_commit, hub_event, sidebar_changed
from chat.services.text import without_nul


def block_create(*, blocker, username: str) -> tuple[Block, bool]:
    """Block `username` (again: nothing changes); True when the block is new."""
    blocked = get_user_model().objects.filter(username=without_nul(username)).first()
    if blocked is None:
        raise NotFound(f"No user '{username}'.")
    if blocked.pk == blocker.pk:
        raise ChatError("You cannot block yourself.", code="invalid")
    with transaction.atomic():
        block, created = Block.objects.get_or_create(blocker=blocker, blocked=blocked)
        if created:
            _dm_state_announce(blocker_id=blocker.pk, blocked_id=blocked.pk, blocked=True)
            after_commit(sidebar_changed, user_ids=[blocker.pk])  # mention counts change
    return block, created


def block_delete(*, blocker, username: str) -> None:
    """Unblock `username`; NotFound when they were not blocked."""
    with transaction.atomic():
        block = Block.objects.filter(blocker=blocker, blocked__username=without_nul(username)).first()
        if block is None:
            raise NotFound(f"You have not blocked '{username}'.")
        block.delete()
        _dm_state_announce(blocker_id=blocker.pk, blocked_id=block.blocked_id, blocked=False)
        after_commit(sidebar_changed, user_ids=[blocker.pk])


def blocks_list(*, user) -> list[dict]:
    """The users `user` has blocked, by username."""
    rows = Block.objects.filter(blocker=user).select_related("blocked").order_by("blocked__username")
    return [{"username": b.blocked.username, "created_at": protocol.isoformat(b.created_at)} for b in rows]


def blocked_user_ids(user) -> set[int]:
    """The ids of the users `user` (a user or a user id) has blocked: their mentions of `user` do not
    count (chat/services/mentions.py leaves them out)."""
    user_id = getattr(user, "pk", user)
    return set(Block.objects.filter(blocker_id=user_id).values_list("blocked_id", flat=True))


def is_blocked(*, blocker_id: int, blocked_id: int) -> bool:
    return Block.objects.filter(blocker_id=blocker_id, blocked_id=blocked_id).exists()


def dm_blocked(*, user_id: int, direct_key: str) -> bool:
    """Whether the other member of the DM with this `direct_key` ("<low id>:<high id>") blocked `user_id`."""
    others = [int(part) for part in direct_key.split(":") if int(part) != user_id]
    return bool(others) and is_blocked(blocker_id=others[0], blocked_id=user_id)


def direct_key(user_ids: Iterable[int]) -> str:
    """A pair's Room.direct_key."""
    low, high = sorted(user_ids)
    return f"{low}:{high}"


def _dm_state_announce(*, blocker_id: int, blocked_id: int, blocked: bool) -> None:
    """Once committed, the blocked user's sockets in the pair's DM (on every instance) learn whether
    they may still write there."""
    room_id = Room.objects.filter(direct_key=direct_key((blocker_id, blocked_id))).values_list("pk", flat=True).first()
    if room_id is not None:
        after_commit(_dm_state_send, user_id=blocked_id, room_id=room_id, blocked=blocked)


async def _dm_state_send(*, user_id: int, room_id: int, blocked: bool) -> None:
    await hub_event({"type": "user.frame", "user": user_id, "room": room_id,
                     "text": protocol.encode(protocol.dm_state_frame(blocked=blocked))})
