"""Sending: a message checked, sequenced and broadcast, then confirmed once it is durable; and the
sends of one socket, sequenced in the order read (SocketSends)."""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError
from uuid6 import uuid7

from chat import idempotency, metrics, permissions, protocol
from chat.bus import backlog, records
from chat.errors import ChatError, NotFound, NotPersisted
from chat.roomstate import SendOutcome, room_state
from chat.services.limits import send_rate, send_refused, send_take
from chat.services.messages import message_current
from chat.services.presence import Participant
from chat.services.rooms import RoomGate, room_seq_seed
from chat.services.text import message_body_clean
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
    in one transaction, in order: a socket sending fast waits for Redis once a batch."""
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
    return [outcome if isinstance(outcome, Exception) else await _outcome_of(_sent(who, state, send, outcome))
            for send, outcome in zip(sends, outcomes, strict=True)]


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


MAX_UNCONFIRMED = 1000  # sent messages of one socket still waiting for Kafka


class SocketSends:
    """One socket's sends: checked as read, sequenced by one task in that order (the sends read while
    the last ones were on their way go together, message_send_many), so the frame loop never waits;
    each confirmed beside it, so a slow Kafka delays acks, not sends. `push(frame)` sends the socket
    a frame; `refused(exc, client_id)` tells it a send was refused or failed. A socket makes one at
    its first send (most sockets never send)."""

    __slots__ = ("_confirming", "_push", "_refused", "_sender", "_waiting", "_who")

    def __init__(self, who: Participant, *, push: Callable[[dict], None],
                 refused: Callable[[Exception, str], None]) -> None:
        self._who, self._push, self._refused = who, push, refused
        self._waiting: list[tuple[SendRequest, float]] = []  # checked, waiting for their room step
        self._sender: asyncio.Task | None = None
        self._confirming: set[asyncio.Task] = set()

    def queue(self, request: SendRequest, *, gate: RoomGate | None = None) -> None:
        """Check a send (message_send_check) and queue it for its room step; refusals raise."""
        if len(self._confirming) + len(self._waiting) >= MAX_UNCONFIRMED:
            raise ChatError("Too many messages waiting to be stored; wait for their acks.", code="rate_limited",
                            retry_after=1.0)
        request = message_send_check(who=self._who, gate=gate, request=request)
        self._waiting.append((request, time.monotonic()))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_queued())

    def cancel(self) -> None:
        """The socket is gone: no more room steps (confirmations under way go on)."""
        if self._sender is not None:
            self._sender.cancel()

    async def _send_queued(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await message_send_many(who=self._who, requests=[req for req, _ in batch])
                except Exception as exc:
                    logger.exception("sends of %s failed", self._who.conn_id)
                    results = [exc] * len(batch)
                for (request, received), result in zip(batch, results, strict=True):
                    if isinstance(result, SentMessage):
                        task = asyncio.ensure_future(self._confirm(result, received))
                        self._confirming.add(task)
                        task.add_done_callback(self._confirming.discard)
                    else:
                        self._refused(result, request.client_id)
        finally:
            self._sender = None

    async def _confirm(self, sent: SentMessage, received: float) -> None:
        try:
            self._push(await message_confirm(sent))
            metrics.SEND_ACK_SECONDS.observe(time.monotonic() - received)
        except ChatError as exc:
            self._push(protocol.error_frame(code=exc.code, detail=exc.detail, client_id=sent.client_id))
