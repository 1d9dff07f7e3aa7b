"""What the worker applies to Postgres (and the embedded default's inline store)."""

from django.db import transaction

from chat import storage
from chat.bus import records
from chat.models import Message


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
