"""A user's data as one JSON document: their profile, their own messages (every room), their rooms
and DMs, read states, reactions and mentions in rooms they may still read. Nothing of anyone else's
but what the user may read anyway: others' messages appear only as ids.

Written a chunk at a time (`user_export_chunks`), a page of messages at a time, so an account with
any number of messages exports in bounded memory: the settings page streams it, the admin offers it
as a download, `manage.py export_user` writes it to a file or stdout."""

from collections.abc import AsyncIterator, Iterator

import orjson
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import Q
from django.http import StreamingHttpResponse
from django.utils import timezone

from chat import permissions, protocol, selectors
from chat.models import ChatProfile, Membership, Mention, Message, ReadState, Room

FORMAT = "chat-export/1"
PAGE = 1000  # rows read per query
CHUNK_BYTES = 64 * 1024  # what one chunk written out holds, at least (but the last)


def _json(value) -> bytes:
    return orjson.dumps(value, default=str)


def user_export_chunks(*, user) -> Iterator[bytes]:
    """The export of `user` as bytes, chunk by chunk; joined, one JSON object (FORMAT)."""
    buffer = bytearray()
    for part in _parts(user):
        buffer += part
        if len(buffer) >= CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _parts(user) -> Iterator[bytes]:
    yield b'{"format":' + _json(FORMAT) + b',"exported_at":' + _json(protocol.isoformat(timezone.now()))
    yield b',"profile":' + _json(_profile(user))
    for name, items in (("rooms", _rooms(user)), ("read_states", _read_states(user)),
                        ("reactions", _reactions(user)), ("mentions", _mentions(user)),
                        ("messages", _messages(user))):
        yield b',"' + name.encode() + b'":['
        for index, item in enumerate(items):
            yield (b"," if index else b"") + _json(item)
        yield b"]"
    yield b"}\n"


def _profile(user) -> dict:
    profile = ChatProfile.objects.filter(user=user).first()
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": user.email,
        "date_joined": protocol.isoformat(user.date_joined),
        "last_login": protocol.isoformat(user.last_login),
        "standing": {"banned": bool(profile and profile.banned),
                     "muted_until": protocol.isoformat(profile.muted_until) if profile else None},
    }


def _rooms(user) -> Iterator[dict]:
    """The rooms of the user's sidebar (member of, opened, DMs), with their role where a member."""
    sidebar = selectors.sidebar_rooms(user.pk)
    roles = dict(Membership.objects.filter(user=user).values_list("room_id", "role"))
    joined = dict(Membership.objects.filter(user=user).values_list("room_id", "joined_at"))
    partners = dict(Membership.objects.filter(room_id__in=[pk for pk, direct in sidebar.items() if direct])
                    .exclude(user=user).values_list("room_id", "user__username"))
    for room in Room.objects.filter(pk__in=list(sidebar)).order_by("slug"):
        yield {"slug": room.slug, "name": room.name, "private": room.private, "archived": room.archived,
               "direct": room.direct_key is not None, "dm_with": partners.get(room.pk),
               "role": roles.get(room.pk), "joined_at": protocol.isoformat(joined.get(room.pk))}


def _read_states(user) -> Iterator[dict]:
    readable = permissions.readable_rooms(user).values("pk")
    for slug, seq, updated in (ReadState.objects.filter(user=user, room__in=readable).order_by("room__slug")
                               .values_list("room__slug", "seq", "updated_at")):
        yield {"room": slug, "seq": seq, "updated_at": protocol.isoformat(updated)}


def _pages(messages, fields: tuple[str, ...]) -> Iterator[dict]:
    """Rows of `messages` (values of `fields`, "id" among them), a page at a time by id (no cursor is
    held open between pages, so the rows may be read across the chunks of a streamed response)."""
    after = None
    while True:
        page = messages if after is None else messages.filter(id__gt=after)
        rows = list(page.order_by("id").values(*fields)[:PAGE])
        yield from rows
        if len(rows) < PAGE:
            return
        after = rows[-1]["id"]


def reacted_by(username: str) -> Q:
    """Messages with a reaction by `username`, on Postgres (JSON containment); elsewhere (the embedded
    default's SQLite has no containment) every message: callers check each row's reactions."""
    if connection.vendor == "postgresql":
        return Q(reactions__contains=[{"users": [username]}])
    return Q()


def _reactions(user) -> Iterator[dict]:
    """The user's reactions, on messages of rooms they may still read that show them."""
    username = user.get_username()
    messages = Message.objects.filter(reacted_by(username), room__in=permissions.readable_rooms(user).values("pk"),
                                      hidden=False, deleted=False)
    for row in _pages(messages, ("id", "room__slug", "seq", "reactions")):
        for item in row["reactions"]:
            if username in item["users"]:
                yield {"room": row["room__slug"], "message": str(row["id"]), "seq": row["seq"],
                       "emoji": item["emoji"]}


def _mentions(user) -> Iterator[dict]:
    """Which messages mention the user (ids only: the bodies are their authors')."""
    mentions = Mention.objects.filter(user=user, room__in=permissions.readable_rooms(user).values("pk"),
                                      message__hidden=False, message__deleted=False)
    for row in _pages(mentions, ("id", "room__slug", "seq", "message_id")):
        yield {"room": row["room__slug"], "seq": row["seq"], "message": str(row["message_id"])}


def _messages(user) -> Iterator[dict]:
    """Every message the user wrote, in any room, whatever became of it (`state`)."""
    fields = ("id", "room__slug", "seq", "body", "created_at", "edited_at", "reply_to", "attachments", "hidden",
              "deleted", "client_id")
    for row in _pages(Message.objects.filter(author=user), fields):
        yield {"id": str(row["id"]), "room": row["room__slug"], "seq": row["seq"], "body": row["body"],
               "created_at": protocol.isoformat(row["created_at"]), "edited_at": protocol.isoformat(row["edited_at"]),
               "reply_to": str(row["reply_to"]) if row["reply_to"] else None,
               "attachments": row["attachments"],
               "state": "hidden" if row["hidden"] else "deleted" if row["deleted"] else "visible"}


def export_filename(user) -> str:
    return f"chat-export-{user.get_username()}-{timezone.now():%Y%m%d}.json"


async def _streamed(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, each read on the request's thread: the server streams them without holding them all."""
    take = sync_to_async(next, thread_sensitive=True)
    while (chunk := await take(chunks, None)) is not None:
        yield chunk


def user_export_response(*, user) -> StreamingHttpResponse:
    """The export as a JSON download, streamed (under ASGI an async iterator is what streams)."""
    response = StreamingHttpResponse(_streamed(user_export_chunks(user=user)), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{export_filename(user)}"'
    response["Cache-Control"] = "no-store"
    return response
