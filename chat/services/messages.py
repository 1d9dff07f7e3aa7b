"""Messages: edit, delete, hide and restore, report, and replay after a reconnect (sending is
chat/services/sending.py)."""

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from chat import permissions, protocol, selectors
from chat.bus import backlog, records
from chat.errors import ChatError, Forbidden, NotFound
from chat.models import Report, Room
from chat.roomstate import room_state
from chat.services.events import change_persist
from chat.services.limits import rate_take
from chat.services.presence import Participant
from chat.services.rooms import RoomGate
from chat.services.text import message_body_clean, without_nul


async def message_current(*, room_id: int, message_id: str, fresh: bool = True) -> dict | None:
    """The message's current frame (a tombstone once deleted or hidden), or None if the room has no
    such message: Redis's (buffered, or changed while the room is live), else Postgres's. `fresh`:
    for a change, read Postgres once the workers stored what Kafka holds for the room, so the next
    rev is above every rev Kafka has (Redis holds nothing for the message after a failover)."""
    frame = await room_state().message_current(room_id, message_id)
    if frame is not None:
        return frame
    stored = await database_sync_to_async(selectors.message_for_change)(message_id)
    if stored is None or stored["room_id"] != room_id:
        return None
    if fresh and await backlog.wait_stored(room_id):
        stored = await database_sync_to_async(selectors.message_for_change)(message_id)
    return stored and stored["frame"]


CHANGE_SECONDS = 3.0  # how long one change keeps trying while others change the same message


async def message_change(*, room_id: int, message_id: str, change, live=None,
                         fresh: bool = True) -> tuple[dict, dict] | None:
    """Make the message's next revision: `change(current frame)` returns the new frame (or None: nothing
    to change, or raises), stored under rev + 1 only if no other change came first (on any instance),
    else made again from that one; `live(new frame)`, the frame the room's clients get, goes out with
    it, so they see a message's changes in order. Returns (the frame changed from, the new frame), or None.
    `fresh=False`: the caller waited for the workers to store the room already (message_current)."""
    current = await message_current(room_id=room_id, message_id=message_id, fresh=fresh)
    deadline = time.monotonic() + CHANGE_SECONDS
    for attempt in itertools.count():
        if attempt >= 2:  # a message many change at once (a popular reaction): spread the retries
            await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
        if current is None:
            raise NotFound("No such message.")
        new = change(current)
        if new is None:
            return None
        rev = current.get("rev", 1)
        new = {**new, "rev": rev + 1}
        newer = await room_state().message_change(room_id, new, from_rev=rev, live=live(new) if live else None)
        if newer is None:
            return current, new
        current = newer
        if time.monotonic() > deadline:
            break
    raise ChatError("The message is being changed by many at once; try again.", code=protocol.ERROR_UNAVAILABLE,
                    retry_after=protocol.UNAVAILABLE_RETRY_AFTER)


def _visible(frame: dict) -> dict:
    """The message of a current frame, or NotFound once it is deleted or hidden."""
    if frame["type"] != "message":
        raise NotFound("No such message.")
    return {k: v for k, v in frame.items() if k != "type"}


async def message_edit(*, who: Participant, message_id: str, body: str, gate: RoomGate | None = None) -> None:
    if gate is not None:
        gate.check()
    await rate_take(user_id=who.user_id, kind="edit")
    body = message_body_clean(body, may_be_empty=True)

    def edit(frame: dict) -> dict:
        message = _visible(frame)
        if not permissions.can_change_message(who.user_id, who.is_staff, message["author"]["id"]):
            raise Forbidden("Only the author or staff may edit this message.")
        if not body.strip() and not message["attachments"]:
            raise ChatError("The message is empty.", code="empty_body")
        return protocol.message_frame({**message, "body": body, "edited_at": protocol.isoformat(timezone.now())})

    _, edited = await message_change(room_id=who.room_id, message_id=message_id, change=edit, live=lambda new: (
        protocol.edited_frame(id=new["id"], seq=new["seq"], body=body, edited_at=new["edited_at"])))
    await change_persist(records.message_record("message.edited", _visible(edited), room_id=who.room_id))


async def message_delete(*, who: Participant, message_id: str, gate: RoomGate | None = None) -> None:
    if gate is not None:
        gate.check()
    await rate_take(user_id=who.user_id, kind="edit")

    def allowed(message: dict) -> None:
        if not permissions.can_change_message(who.user_id, who.is_staff, message["author"]["id"]):
            raise Forbidden("Only the author or staff may delete this message.")

    await message_remove(room_id=who.room_id, message_id=message_id, by="author", check=allowed)


async def message_remove(*, room_id: int, message_id: str, by: str, check=None) -> None:
    """Take a message out of every client and of history: deleted by its author (`check` says whether
    they may) or hidden by staff ("moderator": whatever its state, so the record is always made)."""
    removed: dict = {}

    def remove(frame: dict) -> dict:
        if frame["type"] == "message":
            removed["message"] = _visible(frame)
        elif by != "moderator" or "message" not in removed:
            raise NotFound("No such message.")  # deleted already; staff hide what the row says (below)
        if check is not None:
            check(removed["message"])
        return protocol.tombstone_frame(id=frame["id"], seq=frame["seq"], rev=0, hidden=by == "moderator")

    if by == "moderator":  # Redis may hold only a tombstone: the record carries the stored state
        stored = await database_sync_to_async(selectors.message_for_change)(message_id)
        if stored is not None:
            removed["message"] = stored["message"]
    _, tombstone = await message_change(room_id=room_id, message_id=message_id, change=remove,
                                        live=lambda new: protocol.deleted_frame(id=new["id"], seq=new["seq"]))
    await change_persist(records.message_record("message.deleted", {**removed["message"], "rev": tombstone["rev"]},
                                                room_id=room_id, by=by))


async def message_restore(*, room_id: int, message: dict) -> None:
    """Unhidden by staff: the stored message back in the room's state (where Redis holds it) and in history."""
    result = await message_change(room_id=room_id, message_id=message["id"],
                                  change=lambda frame: protocol.message_frame(message))
    await change_persist(records.message_record("message.restored", _visible(result[1]), room_id=room_id))


async def message_attachment_removed(*, room_id: int, message_id: str, attachment_id: str) -> None:
    """Staff removed one of the message's files: the room sees its new list (`message.attachments`)."""

    def without(frame: dict) -> dict | None:
        if frame["type"] != "message":
            return None  # deleted or hidden: its files are not shown anyway
        kept = [item for item in frame["attachments"] if item["id"] != attachment_id]
        return None if len(kept) == len(frame["attachments"]) else {**frame, "attachments": kept}

    result = await message_change(room_id=room_id, message_id=message_id, change=without, live=lambda new: (
        protocol.attachments_frame(id=new["id"], seq=new["seq"], attachments=new["attachments"])))
    if result is None:
        return
    changed = _visible(result[1])
    await change_persist(records.message_record("message.edited", changed, room_id=room_id))


async def message_report(*, who: Participant, message_id: str, reason: str) -> None:
    await rate_take(user_id=who.user_id, kind="report")
    reason = without_nul(reason).strip()
    if not reason:
        raise ChatError("A report needs a reason.", code="empty_body")
    await database_sync_to_async(report_create)(reporter_id=who.user_id, room_id=who.room_id,
                                                 message_id=message_id, reason=reason[:2000])


def report_create(*, reporter_id: int, room_id: int, message_id: str, reason: str) -> Report:
    message = selectors.message_for_change(message_id)
    if message is None or message["room_id"] != room_id:
        raise NotFound("No such message (it may not be stored yet; try again in a moment).")
    return Report.objects.create(message_id=message_id, reporter_id=reporter_id, reason=reason)


class ReplayIncomplete(Exception):
    """A replay that would need messages the workers have not stored yet: the client resumes later."""


async def messages_since(*, who: Participant, after: int) -> AsyncIterator[list[dict]]:
    """Every visible message with seq > after, in order, a page (up to CHAT_REPLAY_PAGE) at a time;
    the caller asks for the next page once it has sent the last, so a replay holds one page.

    A page comes from the recent buffer when it reaches back to the cursor (it has what the worker
    has not stored yet, and edits newer than Postgres); otherwise (a long absence, or Redis restarted
    empty) from Postgres, once the workers have stored what Kafka holds for the room. If they have
    not within CHAT_REPLAY_CATCHUP_SECONDS (a worker down, Kafka away), ReplayIncomplete: Postgres
    may lack messages below the buffer, and a replay past them would leave the client a gap."""
    state, limit = room_state(), settings.CHAT_REPLAY_PAGE
    room = Room(id=who.room_id, slug=who.room_slug)
    cursor, stored_waited = after, False
    while True:
        frames, oldest = await state.replay_page(who.room_id, cursor, limit)
        from_buffer = oldest is not None and oldest <= cursor + 1
        if not from_buffer:
            if not stored_waited:
                if not await backlog.wait_stored(who.room_id):
                    raise ReplayIncomplete(f"the workers have not stored room {who.room_id}'s messages yet")
                stored_waited = True
            stored = await database_sync_to_async(selectors.persisted_page)(room, after=cursor, limit=limit)
            # Read the buffer again, after Postgres: the worker may have stored a message published
            # meanwhile without one published before it (senders on other instances reach Kafka in
            # any order), and the socket skips held live frames below what the replay sent; so a
            # page from Postgres stops below the buffer, which has every message published since.
            frames, oldest = await state.replay_page(who.room_id, cursor, limit)
            stored = [frame for frame in stored if oldest is None or frame["seq"] < oldest]
            if stored:
                frames = stored
            else:  # Postgres has nothing older than the buffer above the cursor: seqs jumped
                from_buffer = True
        if from_buffer:
            stored_waited = False  # what later falls out of the buffer may not be stored yet
        if frames:
            cursor = frames[-1]["seq"]
        yield [frame for frame in frames if frame["type"] == "message"]
        if from_buffer and len(frames) < limit:
            return
