"""Kafka records (contract §5): a JSON object with an `event` and the message's full state.

Carrying the full state makes every record self-sufficient: whichever arrives first creates the
row, later ones only move it forward, so applying a record twice changes nothing.
"""

import uuid
from datetime import datetime

import orjson

from chat.models import Message

EVENTS = ("message.created", "message.edited", "message.deleted", "message.restored")


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


def decode(value: bytes | None) -> dict:
    """A checked record, or RecordError saying what is wrong with it."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("event") not in EVENTS:
        raise RecordError(f"no known 'event' (one of {', '.join(EVENTS)})")
    try:
        uuid.UUID(str(record["id"]))
        checks = (
            isinstance(record["room_id"], int),
            isinstance(record["seq"], int),
            isinstance(record["author"]["id"], int),
            isinstance(record["body"], str),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"missing or malformed field: {exc}") from None
    if not all(checks):
        raise RecordError("room_id, seq and author.id must be integers and body a string")
    record["created_at"] = _datetime(record.get("created_at"), "created_at")
    if record.get("edited_at") is not None:
        record["edited_at"] = _datetime(record["edited_at"], "edited_at")
    return record


def record_to_message(record: dict) -> Message:
    return Message(
        id=record["id"],
        room_id=record["room_id"],
        seq=record["seq"],
        author_id=record["author"]["id"],
        body=record["body"],
        created_at=record["created_at"],
        edited_at=record.get("edited_at"),
        deleted=record["event"] == "message.deleted" and record.get("by") != "moderator",
        hidden=record["event"] == "message.deleted" and record.get("by") == "moderator",
        client_id=record.get("client_id"),
    )
