"""Actions: every change to chat state goes through one function here.

Async actions run on the event loop of a web process (the socket path); ORM work inside them goes
through `database_sync_to_async`. Sync actions serve views, the admin and the worker.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from uuid6 import uuid7

from chat import metrics, permissions, protocol, selectors, storage
from chat.bus import backlog, records
from chat.errors import ChatError, Conflict, Forbidden, NotFound, NotPersisted
from chat.models import ChatProfile, Membership, Message, ModerationAction, ReadState, Report, Room
from chat.roomstate import HUB_GROUP, parse_rate, room_group, room_state
from chat.signals import message_changed, message_sent

logger = logging.getLogger(__name__)


@dataclass
class Participant:
    """One socket's user in one room, as the socket path knows them."""

    user_id: int
    username: str
    is_staff: bool
    room_id: int
    room_slug: str
    room_name: str
    room_private: bool
    muted_until: object = None
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex)


# --- rooms -------------------------------------------------------------------------------------


def without_nul(text: str) -> str:
    """Postgres text cannot hold NUL; it is the one character dropped from user input."""
    return text.replace("\x00", "")


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


# --- the socket path ---------------------------------------------------------------------------


async def participant_join(*, user, slug: str) -> Participant:
    """Who is joining where, or NotFound / Forbidden."""
    room, profile = await database_sync_to_async(selectors.room_for_socket)(user, slug)
    return Participant(
        user_id=user.id,
        username=user.username,
        is_staff=user.is_staff,
        room_id=room.id,
        room_slug=room.slug,
        room_name=room.name,
        room_private=room.private,
        muted_until=profile.muted_until if profile else None,
    )


async def hello_for(who: Participant) -> dict:
    state = room_state()
    last_seq = await state.last_seq(who.room_id)
    if last_seq is None:
        last_seq = await database_sync_to_async(selectors.room_max_seq)(who.room_id)
    return protocol.hello_frame(
        room={"slug": who.room_slug, "name": who.room_name, "private": who.room_private},
        user={"id": who.user_id, "username": who.username},
        last_seq=last_seq,
        online=await state.presence_online(who.room_id),
    )


async def presence_enter(who: Participant) -> None:
    if await room_state().presence_join(who.room_id, who.conn_id, who.username):
        await presence_announce(who.room_id)


async def presence_exit(who: Participant) -> None:
    if await room_state().presence_leave(who.room_id, who.conn_id, who.username):
        await presence_announce(who.room_id)


async def presence_announce(room_id: int) -> None:
    online = await room_state().presence_online(room_id)
    await room_broadcast(room_id, protocol.presence_frame(online=online))


async def room_broadcast(room_id: int, frame: dict, *, exclude: str | None = None) -> None:
    # Only message frames carry a seq for the sockets' duplicate check; edits and deletes of older
    # messages must always get through.
    seq = frame["seq"] if frame["type"] == "message" else None
    event = {"type": "room.frame", "room": room_id, "text": protocol.encode(frame), "seq": seq}
    if exclude:
        event["exclude"] = exclude
    await get_channel_layer().group_send(room_group(room_id), event)


def _clean_body(body: str) -> str:
    body = without_nul(body)
    if not body.strip():
        raise ChatError("The message is empty.", code="empty_body")
    if len(body) > settings.CHAT_MAX_MESSAGE_LENGTH:
        raise ChatError(
            f"The message has {len(body)} characters; the limit is {settings.CHAT_MAX_MESSAGE_LENGTH}.",
            code="too_long",
        )
    return body


@dataclass(frozen=True)
class SentMessage:
    """A message that is sequenced and broadcast; `message_confirm` waits until it is durable."""

    client_id: str
    record: dict


async def message_send(*, who: Participant, body: str, client_id: str) -> SentMessage:
    """Check, sequence and broadcast one message (or find the first one of a retried client_id)."""
    body = _clean_body(body)
    if permissions.is_muted(who.muted_until):
        raise ChatError("You are muted in this chat for now.", code="muted")
    message = protocol.message_object(
        id=str(uuid7()),  # time-ordered, as Message.id
        room=who.room_slug,
        seq=0,
        author_id=who.user_id,
        author_username=who.username,
        body=body,
        created_at=timezone.now(),
        edited_at=None,
        client_id=client_id,
    )
    state = room_state()
    send = dict(room_id=who.room_id, user_id=who.user_id, client_id=client_id, message=message,
                rate=parse_rate(settings.CHAT_RATE_LIMIT))
    outcome = await state.send(**send, seed=None)
    if outcome.status == "seed":
        seed = await database_sync_to_async(room_seq_seed)(room_id=who.room_id)
        outcome = await state.send(**send, seed=seed)
    if outcome.status == "limited":
        raise ChatError(
            f"Too many messages; try again in {outcome.retry_after} s.",
            code="rate_limited",
            retry_after=outcome.retry_after,
        )
    if outcome.status == "dup":
        # A retry: enqueue the original again (the worker ignores a record it has) and ack it again.
        original = await state.recent_get(who.room_id, outcome.seq)
        if original and original.get("id") == outcome.message_id:
            message = {k: v for k, v in original.items() if k != "type"}
        else:
            message = {**message, "id": outcome.message_id, "seq": outcome.seq}
    else:
        message["seq"] = outcome.seq
        metrics.MESSAGES_SENT.inc()
    return SentMessage(client_id, records.message_record("message.created", message, room_id=who.room_id))


async def message_confirm(sent: SentMessage) -> dict:
    """Fire the post-send signal (its receiver hands the record to Kafka); the ack once it is durable."""
    record = sent.record
    try:
        await message_sent.asend(sender=Message, record=record)
    except Exception as exc:
        metrics.KAFKA_PRODUCE_ERRORS.inc()
        logger.warning("message %s in room %s not persisted: %s", record["id"], record["room"], exc)
        raise NotPersisted(f"The message could not be stored ({type(exc).__name__}); send it again.") from exc
    return protocol.ack_frame(client_id=sent.client_id, id=record["id"], seq=record["seq"])


async def _message_for_change(who: Participant, message_id: str) -> tuple[dict, bool]:
    """The message's current state (the recent buffer is newer than Postgres), or NotFound."""
    stored = await database_sync_to_async(selectors.message_for_change)(message_id)
    current, visible = None, False
    if stored and stored["room_id"] == who.room_id:
        current, visible = stored["message"], stored["visible"]
    buffered = await room_state().recent_get(who.room_id, current["seq"]) if current else None
    if current is None:
        for frame in await room_state().recent(who.room_id, 0):
            if frame.get("id") == message_id:
                buffered = frame
                break
    if buffered is not None:
        if buffered["type"] != "message":
            raise NotFound("No such message.")
        current, visible = {k: v for k, v in buffered.items() if k != "type"}, True
    if current is None or not visible:
        raise NotFound("No such message.")
    return current, visible


async def message_edit(*, who: Participant, message_id: str, body: str) -> None:
    body = _clean_body(body)
    message, _ = await _message_for_change(who, message_id)
    if not permissions.can_change_message(who.user_id, who.is_staff, message["author"]["id"]):
        raise Forbidden("Only the author or staff may edit this message.")
    edited = {**message, "body": body, "edited_at": protocol.isoformat(timezone.now())}
    await room_state().recent_replace(who.room_id, edited["seq"], protocol.message_frame(edited))
    await room_broadcast(
        who.room_id, protocol.edited_frame(id=edited["id"], seq=edited["seq"], body=body, edited_at=edited["edited_at"])
    )
    await _enqueue_change(records.message_record("message.edited", edited, room_id=who.room_id))


async def message_delete(*, who: Participant, message_id: str) -> None:
    message, _ = await _message_for_change(who, message_id)
    if not permissions.can_change_message(who.user_id, who.is_staff, message["author"]["id"]):
        raise Forbidden("Only the author or staff may delete this message.")
    await message_remove(room_id=who.room_id, message=message, by="author")


async def message_remove(*, room_id: int, message: dict, by: str) -> None:
    """Take a message out of every client and of history: deleted by its author or hidden by staff."""
    frame = protocol.deleted_frame(id=message["id"], seq=message["seq"])
    await room_state().recent_replace(room_id, message["seq"], frame)
    await room_broadcast(room_id, frame)
    await _enqueue_change(records.message_record("message.deleted", message, room_id=room_id, by=by))


async def _enqueue_change(record: dict) -> None:
    try:
        await message_changed.asend(sender=Message, record=record)
    except Exception as exc:
        metrics.KAFKA_PRODUCE_ERRORS.inc()
        raise NotPersisted(f"The change could not be stored ({type(exc).__name__}); try again.") from exc


async def message_report(*, who: Participant, message_id: str, reason: str) -> None:
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


async def read_mark(*, who: Participant, seq: int) -> None:
    """Mark the room read up to `seq` (never backwards, never past the newest message) and tell the
    user's other sockets in the room, on every instance."""
    newest = await room_state().last_seq(who.room_id)
    if newest is None:
        newest = await database_sync_to_async(selectors.room_max_seq)(who.room_id)
    seq = min(seq, newest)
    if await database_sync_to_async(read_state_advance)(user_id=who.user_id, room_id=who.room_id, seq=seq):
        await _hub_event({"type": "user.frame", "user": who.user_id, "room": who.room_id, "exclude": who.conn_id,
                          "text": protocol.encode(protocol.read_frame(seq=seq))})


def read_state_advance(*, user_id: int, room_id: int, seq: int) -> bool:
    """Move the read mark forward to `seq`; False when it was there or further already."""
    state, created = ReadState.objects.get_or_create(user_id=user_id, room_id=room_id, defaults={"seq": seq})
    if created:
        return seq > 0
    return ReadState.objects.filter(pk=state.pk, seq__lt=seq).update(seq=seq) > 0


async def typing_notify(*, who: Participant, active: bool) -> None:
    """Relay "typing" to the others, never stored; repeated starts within the throttle are dropped."""
    if not await room_state().typing_allow(who.room_id, who.user_id, active, settings.CHAT_TYPING_THROTTLE):
        return
    await room_broadcast(who.room_id, protocol.typing_frame(user=who.username, active=active), exclude=who.conn_id)


async def messages_since(*, who: Participant, after: int) -> list[dict]:
    """Every visible message with seq > after, in order: from the recent buffer when it reaches back
    to `after` (the usual reconnect); otherwise (a long absence, or Redis restarted empty) from
    Postgres, once the workers have stored what Kafka holds for the room, overlaid by the buffer."""
    state = room_state()
    buffered, buffer_covers = await state.replay_window(who.room_id, after)
    by_seq = {}
    if not buffer_covers:
        await backlog.wait_stored(who.room_id)
        room = Room(id=who.room_id, slug=who.room_slug)
        by_seq = {f["seq"]: f for f in await database_sync_to_async(selectors.persisted_since)(room, after)}
        # Read the buffer again, after Postgres: the worker may have stored a message published
        # after the first read without one published before it (senders on other instances reach
        # Kafka in any order), and the socket skips held live frames below the replay's newest.
        buffered, _ = await state.replay_window(who.room_id, after)
    for frame in buffered:
        by_seq[frame["seq"]] = frame
    return [by_seq[seq] for seq in sorted(by_seq) if by_seq[seq]["type"] == "message"]


# --- persistence (the worker, and inline storage in the embedded default) -----------------------


def messages_persist(batch: list[dict]) -> int:
    """Apply decoded records in one transaction, idempotently; returns how many rows were new.

    Every record carries the message's full state, so each may create its row: one INSERT of all
    of them that skips any row conflicting with a stored one (chat.storage), then edits, deletes
    and restores in batch order.
    """
    if not batch:
        return 0
    rows = list(map(records.record_row, batch))
    with transaction.atomic():
        with storage.references_checked_once(rows):
            new = storage.rows_insert(rows, all_new=all(record["event"] == "message.created" for record in batch))
        for record in batch:
            if record["event"] == "message.edited":
                Message.objects.filter(id=record["id"]).exclude(edited_at__gte=record["edited_at"]).update(
                    body=record["body"], edited_at=record["edited_at"]
                )
            elif record["event"] == "message.deleted":
                flag = "hidden" if record.get("by") == "moderator" else "deleted"
                Message.objects.filter(id=record["id"]).update(**{flag: True})
            elif record["event"] == "message.restored":
                Message.objects.filter(id=record["id"]).update(hidden=False)
    return new


# --- moderation (staff, from the admin: sync code that reaches every instance live) --------------

MUTED_INDEFINITELY = datetime(9999, 1, 1, tzinfo=UTC)


def _moderation_record(*, actor, action: str, reason: str, user=None, message: Message | None = None) -> None:
    ModerationAction.objects.create(actor=actor, action=action, target_user=user, target_message=message,
                                    reason=reason)


def _after_commit(coroutine_function, **kwargs) -> None:
    """Run a live effect once the database change is committed (at once outside a transaction).

    async_to_sync from the admin's worker thread runs it on the server's own event loop, where the
    channel layer's connections live."""
    transaction.on_commit(lambda: async_to_sync(coroutine_function)(**kwargs))


def profile_for(user) -> ChatProfile:
    return ChatProfile.objects.get_or_create(user=user)[0]


def user_ban(*, actor, user, reason: str = "") -> None:
    """Ban: every open socket of the user closes with 4403 on every instance; joins and the API refuse."""
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"banned": True})
        _moderation_record(actor=actor, action="ban", reason=reason, user=user)
        _after_commit(user_disconnect, user_id=user.id, code=protocol.CLOSE_FORBIDDEN)


def user_unban(*, actor, user, reason: str = "") -> None:
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"banned": False})
        _moderation_record(actor=actor, action="unban", reason=reason, user=user)


def user_mute(*, actor, user, until: datetime | None = None, reason: str = "") -> None:
    """Mute until `until` (or indefinitely): sends get `error: muted`, on open sockets too."""
    until = until or MUTED_INDEFINITELY
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"muted_until": until})
        _moderation_record(actor=actor, action="mute", reason=reason or f"until {until:%Y-%m-%d %H:%M %Z}",
                           user=user)
        _after_commit(user_standing_update, user_id=user.id, muted_until=until)


def user_unmute(*, actor, user, reason: str = "") -> None:
    with transaction.atomic():
        ChatProfile.objects.update_or_create(user=user, defaults={"muted_until": None})
        _moderation_record(actor=actor, action="unmute", reason=reason, user=user)
        _after_commit(user_standing_update, user_id=user.id, muted_until=None)


def message_hide(*, actor, message: Message, reason: str = "") -> None:
    """Hide: gone from every connected client (`message.deleted`), from history and from resume."""
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(hidden=True)
        _moderation_record(actor=actor, action="hide", reason=reason, user=message.author, message=message)
        _after_commit(message_remove, room_id=message.room_id,
                      message=selectors.message_to_object(message, message.room.slug), by="moderator")


def message_unhide(*, actor, message: Message, reason: str = "") -> None:
    """Unhide: back in history and resume. Not re-broadcast live: clients get a room's messages in
    increasing seq, and this one is old; they see it on their next history load."""
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(hidden=False)
        _moderation_record(actor=actor, action="unhide", reason=reason, user=message.author, message=message)
        _after_commit(_message_restore, room_id=message.room_id,
                      message=selectors.message_to_object(message, message.room.slug))


def report_resolve(*, actor, report: Report, hide: bool) -> None:
    with transaction.atomic():
        if hide:
            message_hide(actor=actor, message=report.message, reason=f"report #{report.pk}: {report.reason}")
        Report.objects.filter(pk=report.pk).update(resolved=True)
        _moderation_record(actor=actor, action="resolve report", reason=f"report #{report.pk}", user=report.reporter,
                           message=report.message)


async def _message_restore(*, room_id: int, message: dict) -> None:
    if await room_state().recent_get(room_id, message["seq"]) is not None:
        await room_state().recent_replace(room_id, message["seq"], protocol.message_frame(message))
    await _enqueue_change(records.message_record("message.restored", message, room_id=room_id))


async def user_disconnect(*, user_id: int, code: int) -> None:
    await _hub_event({"type": "user.close", "user": user_id, "code": code})


async def user_standing_update(*, user_id: int, muted_until: datetime | None) -> None:
    await _hub_event({"type": "user.standing", "user": user_id, "muted_until": protocol.isoformat(muted_until)})


async def _hub_event(event: dict) -> None:
    """A user-wide event for every instance's hub (which picks that user's sockets)."""
    await get_channel_layer().group_send(HUB_GROUP, event)
