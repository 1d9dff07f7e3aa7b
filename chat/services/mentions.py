"""Mentions (contract §9): which users a stored message mentions, kept as Mention rows by the worker.

A message mentions the users its body names with `@username` (chat.protocol.MENTION_RE) who may
read its room (chat.permissions.readable_rooms), its author aside; in a direct message, every
message mentions the other member. The rows are derived from the stored message, not from the
record, so a record applied twice, late or out of order leaves the rows of the message as it is.
"""

import logging

from django.contrib.auth import get_user_model
from django.db.models import Q

from chat import permissions, protocol
from chat.models import Membership, Mention, Message, Room

logger = logging.getLogger(__name__)

_DIRECT_CACHE_LIMIT = 100_000
# room id -> whether it is a direct message: fixed when the room is made (Room.direct_key is not
# editable), so the worker asks once per room, not once per batch.
_direct: dict[int, bool] = {}


def mentions_store(batch: list[dict]) -> None:
    """Write the Mention rows of the batch's created and edited messages (inside the batch's
    transaction, after its messages are written); an edit drops the rows its new body no longer
    warrants. Idempotent: a (message, user) pair is stored once (ON CONFLICT DO NOTHING). The seq
    is the stored message's (the worker may have stored it under another than the record's)."""
    records: dict[str, dict] = {}
    edited: set[str] = set()
    for record in batch:
        if record["event"] == "message.edited":
            edited.add(record["id"])
        if record["event"] in ("message.created", "message.edited"):
            records[record["id"]] = record
    if not records:
        return
    direct = _direct_rooms({record["room_id"] for record in records.values()})
    # Only messages that may mention anyone are read back: most bodies have no "@" and most rooms
    # are not DMs, so most batches cost one cached lookup and no query.
    wanted = [ident for ident, record in records.items()
              if ident in edited or direct[record["room_id"]] or protocol.mentioned_usernames(record["body"])]
    if not wanted:
        return
    stored = [(str(ident), *rest) for ident, *rest in Message.objects.filter(id__in=wanted, hidden=False, deleted=False)
              .values_list("id", "room_id", "seq", "author_id", "body")]
    targets = _targets(stored, direct)
    Mention.objects.bulk_create(
        [Mention(message_id=ident, user_id=user_id, room_id=room_id, seq=seq)
         for ident, room_id, seq, _, _ in stored for user_id in targets.get(ident, ())],
        ignore_conflicts=True, batch_size=1000)
    if edited:
        stale = Q()
        for ident in edited:
            stale |= Q(message_id=ident) & ~Q(user_id__in=list(targets.get(ident, ())))
        Mention.objects.filter(stale).delete()


def _direct_rooms(room_ids: set[int]) -> dict[int, bool]:
    missing = room_ids - _direct.keys()
    if missing:
        if len(_direct) > _DIRECT_CACHE_LIMIT:
            _direct.clear()
        found = dict(Room.objects.filter(id__in=missing).values_list("id", "direct_key"))
        _direct.update({room_id: found.get(room_id) is not None for room_id in missing})
    return {room_id: _direct[room_id] for room_id in room_ids}


def _targets(stored: list[tuple], direct: dict[int, bool]) -> dict:
    """Message id -> the ids of the users it mentions."""
    names = {ident: protocol.mentioned_usernames(body) for ident, _, _, _, body in stored}
    everyone = set().union(*names.values()) if names else set()
    users = dict(get_user_model().objects.filter(username__in=everyone, is_active=True)
                 .values_list("username", "id")) if everyone else {}
    # Per named user, which of the batch's rooms they may read: the one rule, once per user.
    rooms_named_in: dict[int, set[int]] = {}
    for ident, room_id, _, _, _ in stored:
        for name in names[ident]:
            if name in users:
                rooms_named_in.setdefault(users[name], set()).add(room_id)
    readable = {user_id: set(permissions.readable_rooms(user_id).filter(pk__in=rooms)
                             .values_list("pk", flat=True))
                for user_id, rooms in rooms_named_in.items()}
    dm_rooms = {room_id for _, room_id, _, _, _ in stored if direct[room_id]}
    dm_members: dict[int, set[int]] = {}
    for room_id, user_id in Membership.objects.filter(room_id__in=dm_rooms).values_list("room_id", "user_id"):
        dm_members.setdefault(room_id, set()).add(user_id)
    targets: dict = {}
    for ident, room_id, _, author_id, _ in stored:
        mentioned = {users[name] for name in names[ident]
                     if name in users and room_id in readable.get(users[name], ())}
        mentioned |= dm_members.get(room_id, set())
        mentioned.discard(author_id)
        if mentioned:
            targets[ident] = mentioned
    return targets
