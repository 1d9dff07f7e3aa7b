"""Signal receivers. The post-send signals': enqueue the record to Kafka, or store it inline when the
embedded default runs without Kafka; either way the sender is acked only after this returns.
request_finished's: close the request's database connection."""

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.signals import request_finished
from django.db import connections
from django.dispatch import receiver

from chat.bus import records
from chat.bus.producer import get_producer
from chat.signals import message_changed, message_sent


@receiver(message_sent)
@receiver(message_changed)
async def enqueue_record(sender, record: dict, **kwargs) -> None:
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        await get_producer().send(record)
    else:
        from chat.services import messages_persist

        await database_sync_to_async(messages_persist)([records.decode(records.encode(record))])


@receiver(request_finished)
def close_request_connection(sender, **kwargs) -> None:
    """Under ASGI each HTTP request runs its sync code on a thread of its own that ends with it, so
    a connection kept for reuse (CONN_MAX_AGE, meant for the WebSocket path's one thread) would
    only linger there: close it with the request. Runs on the request's thread, so it closes that
    thread's connection only."""
    connections.close_all()
