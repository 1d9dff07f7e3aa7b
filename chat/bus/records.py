"""Kafka records (contract §5): a JSON object with an `event` and the message's full state.

Carrying the full state makes every record self-sufficient: whichever arrives first creates the
row, later ones only move it forward, so applying a record twice changes nothing.
"""

import re
import uuid
from datetime import datetime

import orjson

EVENTS = ("message.created", "message.edited", "message.deleted", "message.restored", "reaction.changed")


class RecordError(ValueError):
    """A record the worker cannot apply: it goes to the dead-letter topic with this reason."""


def message_record(event: str, message: dict, *, room_id: int, by: str | None = None) -> dict:
    record = {"event": event, "room_id": room_id, **message}
    if by is not None:
        record["by"] = by
    return record


def record_key(record: dict) -> bytes:
    return str(record["room_id"]).encode()


def encode(record: dict) -> bytes:
    return orjson.dumps(record)


def _datetime(value, name: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise RecordError(f"'{name}' is not an ISO 8601 time: {value!r}") from None


# The form every producer writes (str(uuid7())); other spellings uuid.UUID accepts are rewritten to it.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def decode(value: bytes | None) -> dict:
    """A checked record, or RecordError saying what is wrong with it.

    The id comes back in canonical form, the times as aware-or-naive datetimes; room_id, seq and
    author.id are plain integers (not booleans)."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("event") not in EVENTS:
        raise RecordError(f"no known 'event' (one of {', '.join(EVENTS)})")
    try:
        ident = record["id"]
        if type(ident) is not str or not _CANONICAL_UUID.fullmatch(ident):
            record["id"] = str(uuid.UUID(str(ident)))
        checks = (
            type(record["room_id"]) is int,
            type(record["seq"]) is int,
            type(record["author"]["id"]) is int,
            type(record["body"]) is str,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"missing or malformed field: {exc}") from None
    if not all(checks):
        raise RecordError("room_id, seq and author.id must be integers and body a string")
    _check_rich_fields(record)
    record["created_at"] = _datetime(record.get("created_at"), "created_at")
    if record.get("edited_at") is not None:
        record["edited_at"] = _datetime(record["edited_at"], "edited_at")
    return record


def _check_rich_fields(record: dict) -> None:
    """`rev` (contract §8; a change record without one cannot be ordered) and the full state's lists."""
    if record["event"] == "message.created":
        record.setdefault("rev", 1)
    rev = record.get("rev")
    if type(rev) is not int or rev < 1:
        raise RecordError(f"'rev' must be a positive integer (every record that changes a message carries it): {rev!r}")
    reply_to = record.get("reply_to")
    if reply_to is not None:
        try:
            reply_to["id"] = str(uuid.UUID(str(reply_to["id"])))
        except (KeyError, TypeError, ValueError):
            raise RecordError(f"'reply_to' must be null or an object with a message id: {reply_to!r}") from None
    for name in ("reactions", "attachments"):
        value = record.setdefault(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise RecordError(f"'{name}' must be a list of objects")


# The Message fields a record fills, in the order of `record_row`.
ROW_FIELDS = ("id", "room", "seq", "author", "body", "created_at", "edited_at", "hidden", "deleted", "client_id",
              "rev", "reply_to", "reactions", "attachments")


def record_row(record: dict) -> tuple:
    """The Message row a decoded record carries, as values of ROW_FIELDS (no Model instance: the
    worker writes thousands a batch)."""
    deleted = record["event"] == "message.deleted"
    by_moderator = deleted and record.get("by") == "moderator"
    client_id = record.get("client_id")
    if client_id is not None and type(client_id) is not str:
        client_id = str(client_id)  # as the CharField would have it
    reply_to = record.get("reply_to")
    return (record["id"], record["room_id"], record["seq"], record["author"]["id"], record["body"],
            record["created_at"], record.get("edited_at"), by_moderator, deleted and not by_moderator, client_id,
            record["rev"], reply_to["id"] if reply_to else None, record["reactions"], record["attachments"])


def record_state(record: dict) -> dict:
    """The Message fields a change record sets on a stored row whose rev is older: its full state.
    Hidden/deleted only move with the events that change them (a reaction never un-deletes)."""
    state = {"body": record["body"], "edited_at": record.get("edited_at"), "rev": record["rev"],
             "reactions": record["reactions"], "attachments": record["attachments"]}
    if record["event"] == "message.deleted":
        state["hidden" if record.get("by") == "moderator" else "deleted"] = True
    elif record["event"] == "message.restored":
        state["hidden"] = False
    return state
