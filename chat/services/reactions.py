"""Reactions (contract §8): an emoji added to or taken from a message by a user who may read it.

Each change makes the message's next rev through the same compare-and-set as edits
(messages.message_change), so concurrent reactions on any instance each build on the last; the room
gets the full list (`reaction`) and Kafka a `reaction.changed` record with the message's full state.
"""

import emoji
from django.conf import settings

from chat import permissions, protocol
from chat.bus import records
from chat.errors import ChatError
from chat.services.events import change_persist
from chat.services.limits import rate_take
from chat.services.messages import _visible, message_change
from chat.services.presence import Participant
from chat.services.rooms import RoomGate

MAX_EMOJI_CHARS = 16  # the longest emoji sequences (families, flags with tags) are under this


def emoji_clean(value: str) -> str:
    """The emoji as given if it is exactly one emoji (any skin tone or ZWJ sequence), else invalid_frame."""
    if not 0 < len(value) <= MAX_EMOJI_CHARS or not emoji.is_emoji(value):
        raise ChatError("A reaction is one emoji.", code="invalid_frame")
    return value


def reactions_with(reactions: list[dict], *, glyph: str, username: str, add: bool) -> list[dict] | None:
    """The list after the user adds or takes `glyph`, in the order emoji were first used and users
    reacted; None when nothing changes (added twice, or taken without being there). Raises
    too_many_reactions past the per-message and per-user limits."""
    entry = next((item for item in reactions if item["emoji"] == glyph), None)
    if add:
        if entry is not None and username in entry["users"]:
            return None
        if entry is None and len(reactions) >= settings.CHAT_MAX_REACTIONS_PER_MESSAGE:
            raise ChatError("This message has as many different reactions as it may.", code="too_many_reactions")
        if sum(username in item["users"] for item in reactions) >= settings.CHAT_MAX_REACTIONS_PER_USER:
            raise ChatError("You have as many reactions on this message as you may.", code="too_many_reactions")
        if entry is None:
            return [*reactions, {"emoji": glyph, "count": 1, "users": [username]}]
    elif entry is None or username not in entry["users"]:
        return None
    changed = []
    for item in reactions:
        if item is entry:
            users = [*item["users"], username] if add else [user for user in item["users"] if user != username]
            if not users:
                continue
            item = {"emoji": glyph, "count": len(users), "users": users}
        changed.append(item)
    return changed


async def reaction_change(*, who: Participant, message_id: str, glyph: str, add: bool,
                          gate: RoomGate | None = None) -> None:
    if gate is not None:
        gate.check()
    glyph = emoji_clean(glyph)
    if permissions.is_muted(who.muted_until):
        raise ChatError("You are muted in this chat for now.", code="muted")
    await rate_take(user_id=who.user_id, kind="reaction")

    def react(frame: dict) -> dict | None:
        message = _visible(frame)
        reactions = reactions_with(message["reactions"], glyph=glyph, username=who.username, add=add)
        return None if reactions is None else {**frame, "reactions": reactions}

    result = await message_change(room_id=who.room_id, message_id=message_id, change=react, live=lambda new: (
        protocol.reaction_frame(id=new["id"], seq=new["seq"], reactions=new["reactions"])))
    if result is None:
        return
    message = _visible(result[1])
    await change_persist(records.message_record("reaction.changed", message, room_id=who.room_id))
