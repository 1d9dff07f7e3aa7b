"""The WebSocket protocol: the only place frame types and their fields are spelled out.

`parse` turns a client's text frame into a `ClientFrame` or raises `ProtocolError` with the
contract's error code; the builders below make every server frame; `encode` serializes once.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

MAX_FRAME_BYTES = 64 * 1024
MAX_SEQ = 2**63 - 1  # seqs are Postgres bigints

# Close codes (contract §4, §6 and §7).
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_SLOW_CONSUMER = 4408
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_TOO_BIG = 1009
CLOSE_UNSUPPORTED = 1003
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013  # joins over the limit, or a service a join needs down; reason: retry_after=<seconds>

# Error codes of refusals that depend on the room's or the pair's state (docs/protocol.md).
ERROR_ROOM_ARCHIVED = "room_archived"  # the room is archived: read-only
# A frame the instance could not serve because Redis or Postgres failed it for now; try again.
ERROR_UNAVAILABLE = "unavailable"
UNAVAILABLE_RETRY_AFTER = 1.0
ERROR_BLOCKED = "blocked"  # the other member of this DM blocked the sender

# Server frames that change a socket's cached room state; the socket reads them as they pass.
ROOM_STATE_FRAMES = ("room.updated", "dm.state")
# How those frames start once encoded (`encode` keeps "type" first): a cheap test on passing text.
ROOM_STATE_PREFIXES = tuple(f'{{"type":"{name}"' for name in ROOM_STATE_FRAMES)


class ProtocolError(Exception):
    """A client frame the contract rejects; the connection stays open."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ClientFrame:
    type: str
    fields: dict[str, Any]


# type -> {field: expected python type}
CLIENT_FRAMES: dict[str, dict[str, type]] = {
    "message.send": {"body": str, "client_id": str},  # optional: reply_to, attachments (OPTIONAL_FIELDS)
    "message.edit": {"id": str, "body": str},
    "message.delete": {"id": str},
    "message.report": {"id": str, "reason": str},
    "typing": {"active": bool},
    "resume": {"after": int},
    "read": {"seq": int},
    "ping": {},
    "sidebar.watch": {},  # a room socket also carries its user's sidebar frames from now on
    "reaction.add": {"id": str, "emoji": str},
    "reaction.remove": {"id": str, "emoji": str},
}
# type -> {field: (expected python type, its default when absent or null)}
OPTIONAL_FIELDS: dict[str, dict[str, tuple[type, Any]]] = {
    "message.send": {"reply_to": (str, None), "attachments": (list, ())},
}
TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list"}
MAX_ATTACHMENTS = 10  # attachments one message may carry


def parse(text: str) -> ClientFrame:
    try:
        data = orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"The frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_frame", "A frame must be a JSON object with a 'type'.")
    frame_type = data.get("type")
    if not isinstance(frame_type, str):
        raise ProtocolError("invalid_frame", "A frame needs a string field 'type'.")
    schema = CLIENT_FRAMES.get(frame_type)
    if schema is None:
        raise ProtocolError("invalid_frame", f"Unknown frame type {frame_type[:64]!r}.")
    fields = {}
    for name, expected in schema.items():
        value = data.get(name)
        # bool is a subclass of int in Python, so an int field must reject true/false explicitly.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ProtocolError("invalid_frame", f"'{frame_type}' needs '{name}' as {TYPE_NAMES[expected]}.")
        fields[name] = value
    for name, (expected, default) in OPTIONAL_FIELDS.get(frame_type, {}).items():
        value = data.get(name)
        if value is not None and not isinstance(value, expected):
            raise ProtocolError("invalid_frame", f"'{frame_type}' takes '{name}' as {TYPE_NAMES[expected]}.")
        fields[name] = default if value is None else value
    if frame_type == "message.send":
        _check_attachment_ids(fields["attachments"])
    if frame_type == "message.send" and not 1 <= len(fields["client_id"]) <= 64:
        raise ProtocolError("invalid_frame", "'client_id' must be 1 to 64 characters.")
    if frame_type == "message.send" and "\x00" in fields["client_id"]:
        raise ProtocolError("invalid_frame", "'client_id' must not contain NUL characters.")
    if frame_type in ("resume", "read") and not 0 <= next(iter(fields.values())) <= MAX_SEQ:
        raise ProtocolError("invalid_frame", f"'{frame_type}' needs a non-negative 64-bit integer.")
    return ClientFrame(frame_type, fields)


def _check_attachment_ids(ids: list) -> None:
    if len(ids) > MAX_ATTACHMENTS:
        raise ProtocolError("invalid_frame", f"A message takes at most {MAX_ATTACHMENTS} attachments.")
    if not all(isinstance(ident, str) and 0 < len(ident) <= 64 for ident in ids):
        raise ProtocolError("invalid_frame", "'attachments' must list attachment ids (strings).")


def encode(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def isoformat(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def message_object(
    *,
    id: str,
    room: str,
    seq: int,
    author_id: int,
    author_username: str,
    body: str,
    created_at: datetime | str,
    edited_at: datetime | str | None,
    client_id: str | None,
    rev: int = 1,
    reply_to: dict | None = None,
    reactions: list | tuple = (),
    attachments: list | tuple = (),
) -> dict[str, Any]:
    """The message object, the same in HTTP and WebSocket (contract §3 and §8; `rev` added)."""
    return {
        "id": str(id),
        "room": room,
        "seq": seq,
        "author": {"id": author_id, "username": author_username},
        "body": body,
        "created_at": created_at if isinstance(created_at, str) else isoformat(created_at),
        "edited_at": edited_at if edited_at is None or isinstance(edited_at, str) else isoformat(edited_at),
        "client_id": client_id,
        "rev": rev,
        "reply_to": reply_to,
        "reactions": list(reactions),
        "attachments": list(attachments),
    }


EXCERPT_CHARS = 120  # of a parent's first line in a reply's quote


def reply_to_object(parent: dict | None, *, state: str) -> dict:
    """A reply's quote of its parent (contract §8): the excerpt is empty once the parent is gone."""
    first_line = parent["body"].strip().split("\n", 1)[0] if state == "visible" else ""
    return {"id": parent["id"], "seq": parent["seq"], "author": parent["author"],
            "excerpt": first_line[:EXCERPT_CHARS], "state": state}


def message_frame(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", **message}


def hello_frame(*, room: dict, user: dict, last_seq: int, online: list[str],
                muted_until: datetime | None = None) -> dict[str, Any]:
    return {"type": "hello", "room": room, "user": user, "last_seq": last_seq, "online": online,
            **standing_fields(muted_until=muted_until)}


def standing_fields(*, muted_until: datetime | None) -> dict[str, Any]:
    """The user's standing, in `hello` and `standing`: `muted_until` while a mute holds, else null
    (a mute until lifted says year 9999, chat.services.moderation.MUTED_INDEFINITELY)."""
    return {"muted_until": isoformat(muted_until)}


def standing_frame(*, muted_until: datetime | None) -> dict[str, Any]:
    """To the user's sockets when staff mute or unmute them."""
    return {"type": "standing", **standing_fields(muted_until=muted_until)}


def ack_frame(*, client_id: str, id: str, seq: int) -> dict[str, Any]:
    return {"type": "ack", "client_id": client_id, "id": id, "seq": seq}


def edited_frame(*, id: str, seq: int, body: str, edited_at: str) -> dict[str, Any]:
    return {"type": "message.edited", "id": id, "seq": seq, "body": body, "edited_at": edited_at}


def deleted_frame(*, id: str, seq: int) -> dict[str, Any]:
    return {"type": "message.deleted", "id": id, "seq": seq}


def tombstone_frame(*, id: str, seq: int, rev: int, hidden: bool) -> dict[str, Any]:
    """A deleted or hidden message as the room's state keeps it: the deleted frame and what a
    later change needs (its rev; hidden by staff or deleted by its author). Never sent to clients."""
    return {**deleted_frame(id=id, seq=seq), "rev": rev, "hidden": hidden}


def reaction_frame(*, id: str, seq: int, reactions: list) -> dict[str, Any]:
    """The message's full reaction list after a change (contract §8)."""
    return {"type": "reaction", "id": id, "seq": seq, "reactions": reactions}


def attachments_frame(*, id: str, seq: int, attachments: list) -> dict[str, Any]:
    """The message's attachments after staff removed one."""
    return {"type": "message.attachments", "id": id, "seq": seq, "attachments": attachments}


def typing_frame(*, user: str, active: bool) -> dict[str, Any]:
    return {"type": "typing", "user": user, "active": active}


def presence_frame(*, online: list[str]) -> dict[str, Any]:
    return {"type": "presence", "online": online}


def resumed_frame(*, last_seq: int) -> dict[str, Any]:
    return {"type": "resumed", "last_seq": last_seq}


def read_frame(*, seq: int) -> dict[str, Any]:
    return {"type": "read", "seq": seq}


def room_updated_frame(*, slug: str, name: str, archived: bool) -> dict[str, Any]:
    return {"type": "room.updated", "room": {"slug": slug, "name": name, "archived": archived}}


def dm_state_frame(*, blocked: bool) -> dict[str, Any]:
    """To one member of a DM: whether the other member blocked them (their sends are refused)."""
    return {"type": "dm.state", "blocked": blocked}


def pong_frame() -> dict[str, Any]:
    return {"type": "pong"}


def error_frame(*, code: str, detail: str, retry_after: float | None = None, client_id: str | None = None) -> dict:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    if client_id is not None:
        frame["client_id"] = client_id
    return frame


# A mention in a body (contract §9): `@` then a Django username (letters, digits and @.+-_), not
# preceded by a username character (so "mail@example.com" names nobody) and not ending in "." or
# "@" (so "thanks @bob." names "bob"). The browser client uses the same pattern.
MENTION_RE = re.compile(r"(?<![\w.@+-])@([\w.@+-]*[\w+-])")


def mentioned_usernames(body: str) -> frozenset[str]:
    """The usernames a body names with `@`, whether or not such users exist."""
    if "@" not in body:  # most bodies: no regex run at all
        return frozenset()
    return frozenset(MENTION_RE.findall(body))


def sidebar_hello_frame(*, user: dict) -> dict[str, Any]:
    """The first frame of a user socket (/ws/user/), which carries sidebar frames only."""
    return {"type": "sidebar.hello", "user": user}


def sidebar_activity_frame(*, room: str, seq: int, mention: bool) -> dict[str, Any]:
    """A message in another room of the user's sidebar: one more unread (and mention, if `mention`)."""
    return {"type": "sidebar.activity", "room": room, "seq": seq, "mention": mention}


def sidebar_read_frame(*, room: str, seq: int) -> dict[str, Any]:
    """The user read `room` up to `seq` elsewhere (another tab or device): its counts drop."""
    return {"type": "sidebar.read", "room": room, "seq": seq}


def sidebar_changed_frame() -> dict[str, Any]:
    """The user's set of sidebar rooms changed (a new DM, added or removed), or some of its live
    frames may have been missed: the client fetches /api/rooms/ again."""
    return {"type": "sidebar.changed"}
