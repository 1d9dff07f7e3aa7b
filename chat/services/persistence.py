"""What the worker applies to Postgres (and the embedded default's inline store), and what it
reports when a stored row meets a different message: logs, metrics, and the room's live frame."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from django.db import transaction

from chat import metrics, protocol, storage
from chat.bus import records
from chat.models import Message
from chat.selectors import message_to_object
from chat.services.events import room_broadcast
from chat.services.mentions import mentions_store
from chat.services.retention import records_within_retention

logger = logging.getLogger(__name__)

BROADCAST_TIMEOUT = 5.0  # seconds a moved message's live frame may hold up its writer (Redis down)


def messages_persist(batch: list[dict]) -> int:
    """Apply decoded records in one transaction, idempotently; returns how many rows were new.

    Every record carries the message's full state, so each may create its row: one INSERT of all
    of them that skips a row whose message is stored (chat.storage, which stores a different message
    holding a taken seq under a new one and leaves out re-sends), then every change whose `rev` is
    newer than the row's, in batch order, then the mentions of the created and edited ones
    (chat.services.mentions).
    """
    # A replay from Kafka never brings back a message pruned for its room's retention.
    batch = records_within_retention(batch)
    if not batch:
        return 0
    rows = list(map(records.record_row, batch))
    with transaction.atomic():
        with storage.references_checked_once(rows):
            written = storage.rows_insert(rows, all_new=all(record["event"] == "message.created" for record in batch))
        if written.renumbered or written.resent:
            # Once stored for good: a retried batch reports nothing twice.
            transaction.on_commit(lambda: conflicts_report(written), robust=True)
        for record in batch:
            if record["event"] != "message.created":
                # Only a newer rev moves the row: a late or re-driven record never overwrites newer state.
                Message.objects.filter(id=record["id"], rev__lt=record["rev"]).update(**records.record_state(record))
        mentions_store(batch)  # from the messages as now stored, in the same transaction
    return written.new


def conflicts_report(written: storage.Written) -> None:
    """Log and count the messages a write stored under a new seq or left out as re-sends, and send
    the moved ones to their rooms."""
    for moved in written.renumbered:
        metrics.WORKER_SEQ_REASSIGNED.inc()
        logger.warning("room %s: seq %s of message %s was already message %s's (a seq handed out twice: a Redis "
                       "failover or restore?); stored as seq %s", moved.room, moved.was, moved.id, moved.holder,
                       moved.seq)
    for resent in written.resent:
        metrics.WORKER_RESENDS.inc()
        logger.warning("room %s: message %s re-sends client_id %r of message %s, which stands; not stored again",
                       resent.room, resent.id, resent.client_id, resent.kept)
    if not written.renumbered:
        return
    moved = Message.objects.filter(id__in=[moved.id for moved in written.renumbered], hidden=False, deleted=False)
    frames = [(message.room_id, protocol.message_frame(message_to_object(message, message.room.slug)))
              for message in moved.select_related("author", "room").order_by("seq")]
    try:
        async_to_sync(_moved_broadcast)(frames)
    except Exception as exc:  # noqa: BLE001 - stored already; the frame is a courtesy to open sockets
        logger.warning("moved messages not sent to their rooms (%s: %s); they are in the history",
                       exc.__class__.__name__, exc)


async def _moved_broadcast(frames: list[tuple[int, dict]]) -> None:
    """Each moved message, as stored, to its room as a message frame that passes the sockets' seq
    check like an edit: open sockets add it at its new seq."""
    async with asyncio.timeout(BROADCAST_TIMEOUT):
        for room_id, frame in frames:
            await room_broadcast(room_id, frame, moved=True)
