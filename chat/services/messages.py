"""Messages: send and confirm, edit, delete, report, and replay after a reconnect."""

import asyncio
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError
from uuid6 import uuid7

from chat import idempotency, metrics, permissions, protocol, selectors
from chat.bus import backlog, records
from chat.errors import ChatError, Forbidden, NotFound, NotPersisted
from chat.models import Report, Room
from chat.roomstate import SendOutcome, room_state
from chat.services.events import change_persist
from chat.services.limits import rate_take, send_rate, send_refused, send_take
from chat.services.presence import Participant
from chat.services.rooms import RoomGate, room_seq_seed
from chat.services.text import message_body_clean, without_nul
from chat.signals import NotConfirmed, message_sent, persist

logger = logging.getLogger(__name__)

ACKED_MARK_SECONDS = 1.0  # the longest an ack waits for its client_id entry to be marked acked


@dataclass(frozen=True)
class SentMessage:
    """A message that is sequenced and broadcast; `message_confirm` waits until it is durable
    (`acked`: a retry of one Kafka has already)."""

    client_id: str
    user_id: int
    record: dict
    acked: bool = False


@dataclass(frozen=True)
class SendRequest:
    """One `message.send` of a socket, checked (message_send_check) and waiting for its room step."""

    body: str
    client_id: str
    reply_to: str | None = None
    attachments: tuple = ()


def message_send_check(*, who: Participant, request: SendRequest, gate: RoomGate | None = None) -> SendRequest:
    """What a send is refused for before any store is asked: the room's state (archived, blocked in
    a DM; `gate`, the socket's cached copy), the body, a mute. Returns it with its body cleaned."""
    if gate is not None:
        gate.check()
    body = message_body_clean(request.body, may_be_empty=bool(request.attachments))
    if permissions.is_muted(who.muted_until):
        raise ChatError("You are muted in this chat for now.", code="muted")
    return SendRequest(body, request.client_id, request.reply_to, tuple(request.attachments))


async def message_send(*, who: Participant, body: str, client_id: str, gate: RoomGate | None = None,
                       reply_to: str | None = None, attachments: list[str] | tuple = ()) -> SentMessage:
    """Check, sequence and broadcast one message (or find the first one of a retried client_id).
    `gate`: the socket's cached room state (archived room, blocked in a DM), which refuses it.
    `reply_to`: the id of a visible message of the room it answers; `attachments`: ids of the
    sender's uploads to this room, claimed by this message."""
    request = message_send_check(who=who, request=SendRequest(body, client_id, reply_to, tuple(attachments)),
                                 gate=gate)
    send = await _send_prepared(who, request)
    state = room_state()
    if state.bucket_in_send(user_id=who.user_id, room_id=who.room_id):  # one round trip for both
        outcome = await state.send(**send, seed=None, rate=send_rate())
    else:
        await send_take(user_id=who.user_id)  # on the user's shard, before the room's step on the room's
        outcome = await state.send(**send, seed=None)
    return await _sent(who, state, send, outcome)


async def message_send_many(*, who: Participant, requests: list[SendRequest]) -> list:
    """A socket's checked sends read while its last ones were on their way, in order: each's SentMessage,
    or the exception that refused it (the others go on). When the user's bucket is on the room's
    shard and none needs a database read first (a reply's quote, attachments), their room steps go
    in one pipeline, in order on one connection: a socket sending fast waits for Redis once a batch."""
    state = room_state()
    if len(requests) == 1 or not state.bucket_in_send(user_id=who.user_id, room_id=who.room_id) or any(
            request.reply_to or request.attachments for request in requests):
        return [await _outcome_of(message_send(who=who, body=request.body, client_id=request.client_id,
                                               reply_to=request.reply_to, attachments=request.attachments))
                for request in requests]
    sends = [await _send_prepared(who, request) for request in requests]
    try:
        outcomes = await state.send_many(sends, rate=send_rate())
    except SEND_FAILURES as exc:
        return [exc] * len(sends)
    return [await _outcome_of(_sent(who, state, send, outcome)) for send, outcome in zip(sends, outcomes, strict=True)]


# What refuses or fails one send; the socket reports it for that send and goes on.
SEND_FAILURES = (ChatError, RedisError, DatabaseError, OSError, TimeoutError)


async def _outcome_of(sending):
    try:
        return await sending
    except SEND_FAILURES as exc:
        return exc


async def _send_prepared(who: Participant, request: SendRequest) -> dict:
    """The room step's arguments: the message object, its quote and claimed attachments."""
    message_id = str(uuid7())  # time-ordered, as Message.id
    quote = await _reply_quote(room_id=who.room_id, parent_id=request.reply_to) if request.reply_to else None
    files = await _attachments_claim(who, request.attachments, message_id=message_id, client_id=request.client_id)
    message = protocol.message_object(
        id=message_id,
        room=who.room_slug,
        seq=0,
        author_id=who.user_id,
        author_username=who.username,
        body=request.body,
        created_at=timezone.now(),
        edited_at=None,
        client_id=request.client_id,
        reply_to=quote,
        attachments=files,
    )
    return dict(room_id=who.room_id, user_id=who.user_id, client_id=request.client_id, message=message)


async def _sent(who: Participant, state, send: dict, outcome: SendOutcome) -> SentMessage:
    """The message as its room step left it: new, the first one of a retried client_id, or refused."""
    message, client_id = send["message"], send["client_id"]
    if outcome.status == "limited":
        raise send_refused(outcome.wait)
    if outcome.status == "seed":
        outcome = await _send_in_new_epoch(state, send, room_id=who.room_id)
    if outcome.status == "dup" and outcome.acked:  # Kafka has it: the first ack again, nothing enqueued
        message = {**message, "id": outcome.message_id, "seq": outcome.seq}
        return SentMessage(client_id, who.user_id, records.message_record("message.created", message,
                                                                          room_id=who.room_id), acked=True)
    if outcome.status == "dup":
        # A retry of one not acked (yet): enqueue the original again (the worker ignores a record it has).
        original = await state.recent_get(who.room_id, outcome.seq)
        if original and original.get("id") == outcome.message_id:
            message = {k: v for k, v in original.items() if k != "type"}
        else:
            message = {**message, "id": outcome.message_id, "seq": outcome.seq}
    else:
        message = {**message, "seq": outcome.seq}
        metrics.MESSAGES_SENT.inc()
    return SentMessage(client_id, who.user_id, records.message_record("message.created", message, room_id=who.room_id))


async def _reply_quote(*, room_id: int, parent_id: str) -> dict:
    parent = await message_current(room_id=room_id, message_id=parent_id, fresh=False)
    if parent is None or parent["type"] != "message":
        raise NotFound("The message you reply to is not in this room (or was deleted).")
    return protocol.reply_to_object(parent, state="visible")


async def _attachments_claim(who: Participant, ids: list[str] | tuple, *, message_id: str, client_id: str) -> list:
    if not ids:
        return []
    from chat.services.attachments import attachments_claim

    return await database_sync_to_async(attachments_claim)(user_id=who.user_id, room_id=who.room_id, ids=list(ids),
                                                           message_id=message_id, client_id=client_id)


async def _send_in_new_epoch(state, send: dict, *, room_id: int) -> SendOutcome:
    """The room's counter is gone (a new room; a Redis restart, failover or restore): seed it. A
    room that had messages first gets back the idempotency entries Redis lost, from Postgres once
    the workers have stored what Kafka holds for it, so the retry of a message whose ack was lost
    with Redis is answered with its first id and seq, not sent again as a second message."""
    seed = await database_sync_to_async(room_seq_seed)(room_id=room_id)
    if seed > 0:
        await backlog.wait_stored(room_id)
        entries = await database_sync_to_async(idempotency.stored_entries)(room_id=room_id)
        await state.client_ids_restore(room_id=room_id, entries=entries)
    return await state.send(**send, seed=seed)


async def message_confirm(sent: SentMessage) -> dict:
    """Fire the post-send signal; the ack, once its persistence receiver confirms the message is
    durable (Kafka has it, or it is stored inline)."""
    record = sent.record
    if sent.acked:
        return protocol.ack_frame(client_id=sent.client_id, id=record["id"], seq=record["seq"])
    try:
        await persist(message_sent, record)
    except Exception as exc:
        metrics.KAFKA_PRODUCE_ERRORS.inc()
        if not isinstance(exc, NotConfirmed):  # persist logged that one
            logger.warning("message %s in room %s not persisted: %s", record["id"], record["room"], exc)
        raise NotPersisted(f"The message could not be stored ({type(exc).__name__}); send it again.") from exc
    try:  # bounded: Redis being down must not hold back an ack Kafka has earned
        await asyncio.wait_for(room_state().send_acked(room_id=record["room_id"], user_id=sent.user_id,
                                                       client_id=sent.client_id, message_id=record["id"],
                                                       seq=record["seq"]), ACKED_MARK_SECONDS)
    except Exception:  # noqa: BLE001 - Kafka has it: ack; a retry enqueues it again, which the worker ignores
        logger.warning("could not mark message %s acked in room %s (Redis unreachable?)", record["id"], record["room"])
    return protocol.ack_frame(client_id=sent.client_id, id=record["id"], seq=record["seq"])


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
