"""The chat's durability signals. Receivers run after the live broadcast; the sender is acked only
when a receiver confirms the record is durable.

`message_sent` fires for every new message, `message_changed` for edits, deletes and moderation;
both carry `record`, the Kafka record (contract §5) describing the message's full new state. The one
persistence receiver (chat/receivers.py) answers with `Persisted` once Kafka has the record, or once
it is stored inline in the embedded default. A process with no such receiver refuses to start
(chat/checks.py), and `persist` refuses to confirm a record no receiver vouched for.
"""

import logging
from dataclasses import dataclass

from django.dispatch import Signal

logger = logging.getLogger(__name__)

message_sent = Signal()
message_changed = Signal()
DURABILITY_SIGNALS = {"message_sent": message_sent, "message_changed": message_changed}


@dataclass(frozen=True)
class Persisted:
    """A persistence receiver's confirmation that the record with this id is durable."""

    record_id: str
    where: str  # "kafka" or "database" (the embedded default's inline store)


class NotConfirmed(Exception):
    """No receiver confirmed the record: acking it would promise what nobody kept."""


async def persist(signal: Signal, record: dict) -> Persisted:
    """Fire `signal` for `record`; the receiver's confirmation, or NotConfirmed. A receiver's own
    failure (Kafka refused the record) propagates."""
    from chat.models import Message

    for _, response in await signal.asend(sender=Message, record=record):
        if isinstance(response, Persisted) and response.record_id == record["id"]:
            return response
    logger.error("no persistence receiver confirmed record %s (%s): not acknowledged", record["id"],
                 record["event"])
    raise NotConfirmed(f"no persistence receiver confirmed record {record['id']}")
