"""Account deletion: the account ends at once on every instance, and its messages are kept under a
stand-in shown as a deleted user ("keep") or erased ("remove"), CHAT_DELETED_USER_MESSAGES.

Every change to a message goes the way of any other: a compare-and-set of its next rev in the room's
Redis state (which replaces a buffered frame), the live frame, and a record through Kafka that the
worker applies. docs/operations.md, "Account deletion and export", says what stays where."""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from chat import protocol, selectors
from chat.bus import backlog, records
from chat.errors import ChatError
from chat.models import Attachment, ChatProfile, Membership, Mention, Message, ModerationAction, ReadState
from chat.roomstate import room_state
from chat.services.events import after_commit, change_persist, sidebar_changed, sockets_close
from chat.services.export import reacted_by
from chat.services.messages import message_change

logger = logging.getLogger(__name__)

MODES = ("keep", "remove")
STAND_IN_PREFIX = "deleted-"  # + 8 hex digits: the username history shows for a deleted user
# A deleted account is no longer logged in anywhere: its sockets close as after a logout.
CLOSE_CODE = protocol.CLOSE_NOT_LOGGED_IN
BY_ERASURE = "erasure"  # the `by` of the message.deleted records of an erased message
BATCH = 500  # messages read, changed and handed to Kafka at a time: memory stays bounded
CONCURRENCY = 16  # compare-and-sets in flight at once
ROUNDS = 3  # passes over what is left, for messages stored while the first passes ran
DEADLOCK, DEADLOCK_TRIES = "40P01", 5  # Postgres's deadlock_detected, and how often a batch meets it

Progress = Callable[[str], None]


class DeletionRefused(ValueError):
    """The account may not be deleted this way (a stand-in, or an unknown mode)."""


class DeletionUnfinished(ChatError):
    """The account is closed, but its messages could not all be changed now (the workers are behind
    or Kafka is away): running the deletion again finishes it."""

    code = protocol.ERROR_UNAVAILABLE
    http_status = 503


@dataclass
class Deletion:
    """What a deletion did, for its caller's report."""

    stand_in: str
    mode: str
    messages: int = 0
    reactions: int = 0
    quotes: int = 0
    files: int = 0


def deletion_mode(value: str | None = None) -> str:
    """`value`, or the CHAT_DELETED_USER_MESSAGES setting: "keep" or "remove"."""
    mode = value or settings.CHAT_DELETED_USER_MESSAGES
    if mode not in MODES:
        raise DeletionRefused(f"The messages of a deleted account are 'keep' or 'remove', not {mode!r}.")
    return mode


def stand_in_username(user_id: int) -> str:
    """The stand-in's username: the same for one account every time, so a deletion run again
    (after Kafka refused a record, say) finishes with the stand-in the first run made."""
    return STAND_IN_PREFIX + salted_hmac("chat.erasure.stand-in", str(user_id)).hexdigest()[:8]


def is_stand_in(user) -> bool:
    return ChatProfile.objects.filter(user=user, deleted_account=True).exists()


def user_delete(*, user, messages: str | None = None, actor=None, reason: str = "",
                progress: Progress | None = None) -> Deletion:
    """Delete `user`'s account. First it ends: inactive, no usable password, its sessions deleted,
    its sockets closed with 4401 on every instance. Then each of its messages gets its next rev:
    kept under the stand-in ("keep"; messages it had deleted itself are erased all the same) or
    erased ("remove": deleted, body, files and reactions blanked, mentions gone); its reactions leave
    other messages, and quotes of its messages in the rooms' buffers name the stand-in (or lose
    their excerpt). Last the stand-in takes its place in its DMs and its uploads (keep), erased
    files leave storage, and the user row is deleted. Raises NotPersisted when Kafka refuses a
    record (DeletionUnfinished when the workers are behind): the account stays closed, and running
    the deletion again finishes it. Never inside a transaction: the workers must see each batch."""
    mode = deletion_mode(messages)
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("user_delete runs outside a transaction (transaction.on_commit, say)")
    if is_stand_in(user):
        raise DeletionRefused("This account is the stand-in of a deleted account.")
    say = progress or (lambda text: None)
    stand_in = _account_close(user)
    done = Deletion(stand_in=stand_in.username, mode=mode)
    say(f"account closed: sessions deleted, sockets closing with {CLOSE_CODE}; stand-in {stand_in.username}")
    async_to_sync(_messages_change)(user=user, stand_in=stand_in, done=done, say=say)
    _account_drop(user=user, stand_in=stand_in, actor=actor, reason=reason, done=done)
    say(f"account deleted: {done.messages} messages ({mode}), {done.reactions} reactions taken off, "
        f"{done.quotes} quotes renamed, {done.files} files deleted")
    return done


def _account_close(user):
    """The account's end, before any message changes: nobody can use it from now on."""
    users = get_user_model()
    with transaction.atomic():
        user.is_active = False
        user.set_unusable_password()
        user.save(update_fields=["is_active", "password"])
        stand_in = users.objects.filter(username=stand_in_username(user.pk)).first()
        if stand_in is not None and not is_stand_in(stand_in):
            raise DeletionRefused(f"A user named {stand_in.username} exists and is no stand-in; rename it first.")
        if stand_in is None:
            stand_in = users(username=stand_in_username(user.pk), first_name="deleted user", is_active=False)
            stand_in.set_unusable_password()
            stand_in.save()
        ChatProfile.objects.update_or_create(user=stand_in, defaults={"deleted_account": True})
        sessions_delete(user_id=user.pk)
        after_commit(sockets_close, user_id=user.pk, code=CLOSE_CODE)
    return stand_in


def sessions_delete(*, user_id: int) -> int:
    """Delete the user's sessions where Django keeps them in the database (the default engine);
    elsewhere they are dead anyway: the password's session hash changed and the user row goes."""
    if settings.SESSION_ENGINE not in ("django.contrib.sessions.backends.db",
                                       "django.contrib.sessions.backends.cached_db"):
        return 0
    from django.contrib.sessions.models import Session

    theirs, wanted = [], str(user_id)
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator(chunk_size=1000):
        if session.get_decoded().get("_auth_user_id") == wanted:
            theirs.append(session.session_key)
    return Session.objects.filter(session_key__in=theirs).delete()[0]


# The changes to messages, run on the event loop (async_to_sync) like any socket's.


async def _messages_change(*, user, stand_in, done: Deletion, say: Progress) -> None:
    author = {"id": stand_in.pk, "username": stand_in.username}
    rooms = await database_sync_to_async(_rooms_of)(user.pk)
    total = await database_sync_to_async(Message.objects.filter(author_id=user.pk).count)()
    say(f"{total} messages in {len(rooms)} rooms; waiting for the workers to store what Kafka holds")
    for round_ in range(ROUNDS):
        if not await _stored(rooms) and round_ == 0:
            # Each change would wait for them in turn: better to stop, with the account closed.
            raise DeletionUnfinished("The workers have not stored the user's rooms yet (is one running?); the "
                                     "account is closed, and running the deletion again finishes it.")
        changed = 0
        while batch := await database_sync_to_async(_messages_batch)(user.pk):
            changes = await _bounded(_message_change(row, user_id=user.pk, author=author, mode=done.mode)
                                     for row in batch)
            await _persist(changes)
            ids = [row["message"]["id"] for row in batch]
            await database_sync_to_async(_batch_reassigned)(ids, user_id=user.pk, stand_in_id=stand_in.pk,
                                                             mode=done.mode)
            done.quotes += await _quotes_change(ids, user_id=user.pk, author=author, mode=done.mode)
            changed += len(batch)
            done.messages += len(batch)
            say(f"messages: {done.messages} of {max(total, done.messages)}")
        if not changed:
            break
        rooms |= await database_sync_to_async(_rooms_of)(user.pk)
    after = None
    while page := await database_sync_to_async(_reacted_page)(rooms, username=user.username, after=after):
        after = page[-1]["message"]["id"]
        changes = await _bounded(_reaction_take(row, username=user.username) for row in page)
        await _persist(changes)
        done.reactions += sum(change is not None for change in changes)
        say(f"reactions taken off: {done.reactions}")


async def _stored(rooms: set[int]) -> bool:
    """Whether the workers stored the rooms' records Kafka has (each wait bounded by
    CHAT_REPLAY_CATCHUP_SECONDS)."""
    waits = await asyncio.gather(*(backlog.wait_stored(room_id) for room_id in sorted(rooms)))
    if not all(waits):
        logger.warning("account deletion: the workers have not stored everything of %d room(s) yet",
                       waits.count(False))
    return all(waits)


async def _bounded(coroutines) -> list:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(coroutine):
        async with gate:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))


async def _persist(changes: list) -> None:
    """Hand the batch's records to Kafka together (the producer batches them); each must be accepted."""
    await asyncio.gather(*(change_persist(change) for change in changes if change is not None))


def _quote(reply_to: dict | None, *, user_id: int, author: dict, erased: bool) -> dict | None:
    """A quote of one of the user's messages, naming the stand-in (and without its text once erased)."""
    if not reply_to or (reply_to.get("author") or {}).get("id") != user_id:
        return reply_to
    return {**reply_to, "author": author, **({"excerpt": "", "state": "deleted"} if erased else {})}


def _without(reactions: list, username: str) -> list:
    kept = []
    for item in reactions:
        users = [name for name in item["users"] if name != username]
        if users:
            kept.append({**item, "count": len(users), "users": users})
    return kept


async def _message_change(row: dict, *, user_id: int, author: dict, mode: str) -> dict:
    """One message of the user's: its next rev under the stand-in, kept or erased; returns its record."""
    stored, room_id = row["message"], row["room_id"]
    made: dict = {}

    def change(frame: dict) -> dict:
        visible = frame["type"] == "message"
        message = {k: v for k, v in frame.items() if k != "type"} if visible else stored
        hidden = not visible and frame.get("hidden", False)
        # Kept: what others may still see. A message its author had deleted goes in either mode.
        erase = mode == "remove" or not (visible or hidden)
        message = {**message, "author": author, "reactions": _without(message["reactions"], row["username"]),
                   "reply_to": _quote(message.get("reply_to"), user_id=user_id, author=author, erased=False)}
        made.update(visible=visible, erase=erase)
        if erase:
            made["message"] = {**message, "body": "", "attachments": [], "reactions": []}
            return protocol.tombstone_frame(id=message["id"], seq=message["seq"], rev=0, hidden=hidden)
        made["message"] = message
        return protocol.message_frame(message) if visible else frame

    # Clients get only the removal: no frame says a message's author changed (they see it on reload).
    # fresh=False: the rooms were waited for once (_stored), not once a message.
    _, new = await message_change(room_id=room_id, message_id=stored["id"], change=change, fresh=False,
                                  live=lambda new: (protocol.deleted_frame(id=new["id"], seq=new["seq"])
                                                    if made["erase"] and made["visible"] else None))
    message = {**made["message"], "rev": new["rev"]}
    if made["erase"]:
        return records.message_record("message.deleted", message, room_id=room_id, by=BY_ERASURE)
    return records.message_record("message.edited", message, room_id=room_id)


async def _quotes_change(parent_ids: list[str], *, user_id: int, author: dict, mode: str) -> int:
    """Replies by others whose frames in a room's buffer quote one of these messages: the quote names
    the stand-in (erased: no excerpt). Postgres makes its quotes when read, from the parent as stored."""
    replies = await database_sync_to_async(_replies_of)(parent_ids, user_id=user_id)
    state = room_state()

    async def one(room_id: int, message_id: str) -> dict | None:
        frame = await state.message_current(room_id, message_id)
        if frame is None or frame["type"] != "message":
            return None
        quote = _quote(frame.get("reply_to"), user_id=user_id, author=author, erased=mode == "remove")
        if quote == frame.get("reply_to"):
            return None
        result = await message_change(room_id=room_id, message_id=message_id, change=lambda current: (
            None if current["type"] != "message" else {**current, "reply_to": _quote(
                current.get("reply_to"), user_id=user_id, author=author, erased=mode == "remove")}))
        if result is None:
            return None
        message = {k: v for k, v in result[1].items() if k != "type"}
        return records.message_record("message.edited", message, room_id=room_id)

    changes = await _bounded(one(room_id, message_id) for room_id, message_id in replies)
    await _persist(changes)
    return sum(change is not None for change in changes)


async def _reaction_take(row: dict, *, username: str) -> dict | None:
    """The user's reactions off another's message; its record, or None when there were none left."""
    stored, room_id = row["message"], row["room_id"]
    made: dict = {}

    def change(frame: dict) -> dict | None:
        visible = frame["type"] == "message"
        message = {k: v for k, v in frame.items() if k != "type"} if visible else stored
        reactions = _without(message["reactions"], username)
        if reactions == message["reactions"]:
            return None
        made.update(visible=visible, message={**message, "reactions": reactions})
        return protocol.message_frame(made["message"]) if visible else frame

    result = await message_change(room_id=room_id, message_id=stored["id"], change=change, fresh=False,
                                  live=lambda new: (protocol.reaction_frame(id=new["id"], seq=new["seq"],
                                                                            reactions=new["reactions"])
                                                    if made["visible"] else None))
    if result is None:
        return None
    return records.message_record("reaction.changed", {**made["message"], "rev": result[1]["rev"]}, room_id=room_id)


# Reads and writes of Postgres, each on the caller's database connection (database_sync_to_async).


def _rooms_of(user_id: int) -> set[int]:
    """Rooms the user may have written or reacted in: theirs, those they opened, those with their messages."""
    rooms = set(Membership.objects.filter(user_id=user_id).values_list("room_id", flat=True))
    rooms |= set(ReadState.objects.filter(user_id=user_id).values_list("room_id", flat=True))
    rooms |= set(Message.objects.filter(author_id=user_id).order_by().values_list("room_id", flat=True).distinct())
    return rooms


def _rows(messages) -> list[dict]:
    rows = list(messages.select_related("author", "room"))
    return [{"message": obj, "room_id": row.room_id, "username": row.author.username}
            for row, obj in zip(rows, selectors.messages_to_objects(rows), strict=True)]


def _messages_batch(user_id: int) -> list[dict]:
    """The next messages still under the user's name (each batch done moves to the stand-in)."""
    return _rows(Message.objects.filter(author_id=user_id).order_by("id")[:BATCH])


def _batch_reassigned(ids: list[str], *, user_id: int, stand_in_id: int, mode: str) -> None:
    """What the batch's records say, written at once too: history and search show it before the
    worker gets there, and no row is left for the user row's cascade to take; erased ones' mentions go."""
    erased = {} if mode == "keep" else {"body": "", "deleted": True, "attachments": [], "reactions": []}
    for attempt in range(DEADLOCK_TRIES):
        try:
            with transaction.atomic():
                Message.objects.filter(id__in=ids, author_id=user_id).update(author_id=stand_in_id, **erased)
                if mode == "keep":  # the messages it had deleted itself are erased in either mode
                    Message.objects.filter(id__in=ids, deleted=True).update(body="", attachments=[], reactions=[])
                Mention.objects.filter(message_id__in=ids, message__deleted=True).delete()
            return
        except OperationalError as exc:  # deadlocked with the worker writing these rows: safe to run again
            if getattr(exc.__cause__, "pgcode", None) != DEADLOCK or attempt == DEADLOCK_TRIES - 1:
                raise
            logger.warning("account deletion batch deadlocked with another writer; trying it again")
            time.sleep(0.05 * (attempt + 1))


def _replies_of(parent_ids: list[str], *, user_id: int) -> list[tuple[int, str]]:
    return [(room_id, str(ident)) for room_id, ident in
            Message.objects.filter(reply_to__in=parent_ids).exclude(author_id=user_id).values_list("room_id", "id")]


def _reacted_page(rooms: set[int], *, username: str, after: str | None) -> list[dict]:
    """Messages of these rooms with a reaction by `username`, a page at a time by id."""
    messages = Message.objects.filter(reacted_by(username), room_id__in=rooms)
    if after is not None:
        messages = messages.filter(id__gt=after)
    return _rows(messages.order_by("id")[:BATCH])


def _account_drop(*, user, stand_in, actor, reason: str, done: Deletion) -> None:
    """The last step: the stand-in takes the user's place in DMs and on kept uploads, the erased
    uploads' files go, the deletion is logged, and the user row is deleted."""
    with transaction.atomic():
        # Messages stored since the last pass: too late for a record of their own, but not lost.
        late = Message.objects.filter(author_id=user.pk)
        if done.mode == "remove":
            late.update(author_id=stand_in.pk, body="", deleted=True, attachments=[], reactions=[])
        else:
            late.update(author_id=stand_in.pk)
        uploads = Attachment.objects.filter(uploader_id=user.pk)
        if done.mode == "keep":
            uploads.filter(message_id__in=Message.objects.filter(author_id=stand_in.pk, deleted=False)
                           .values("id")).update(uploader_id=stand_in.pk)
        doomed = list(Attachment.objects.filter(uploader_id=user.pk))
        done.files = len(doomed)
        transaction.on_commit(lambda: _files_delete(doomed))
        directs = Membership.objects.filter(user_id=user.pk, room__direct_key__isnull=False)
        partners = list(Membership.objects.filter(room_id__in=directs.values("room_id")).exclude(user_id=user.pk)
                        .values_list("user_id", flat=True))
        directs.update(user_id=stand_in.pk)  # the DM keeps two members, and its partner reads it
        by_staff = actor is not None and actor.pk != user.pk
        ModerationAction.objects.create(
            actor=actor if by_staff else None, action="delete_account", target_user=stand_in,
            reason=f"account deleted{' by staff' if by_staff else ''}; its {done.messages} messages: {done.mode}"
                   + (f"; {reason}" if reason else ""))
        user.delete()
        if partners:
            after_commit(sidebar_changed, user_ids=partners)


def _files_delete(attachments: list[Attachment]) -> None:
    for attachment in attachments:
        for field in (attachment.file, attachment.thumbnail):
            if field.name:
                try:
                    field.storage.delete(field.name)
                except Exception:  # the account is gone all the same; a file left over is logged
                    logger.exception("account deletion: could not delete %s", field.name)
