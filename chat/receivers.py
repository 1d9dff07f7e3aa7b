"""Signal receivers. The durability signals' one persistence receiver: enqueue the record to Kafka,
or store it inline when the embedded default runs without Kafka, and confirm either with
`Persisted`; the sender is acked only on that confirmation. request_finished's: close the request's
database connection."""

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.signals import request_finished
from django.db import connections
from django.dispatch import receiver

from chat.bus import records
from chat.bus.producer import get_producer
from chat.signals import Persisted, message_changed, message_sent


@receiver(message_sent)
@receiver(message_changed)
async def persist_record(sender, record: dict, **kwargs) -> Persisted:
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        await get_producer().send(record)  # resolves once Kafka has it (acks=all), else raises
        return Persisted(record["id"], "kafka")
    from chat.services.persistence import messages_persist

    await database_sync_to_async(messages_persist)([records.decode(records.encode(record))])
    return Persisted(record["id"], "database")


@receiver(request_finished)
def close_request_connection(sender, **kwargs) -> None:
    """Under ASGI each HTTP request runs its sync code on a thread of its own that ends with it, so
    a connection kept for reuse (CONN_MAX_AGE, meant for the WebSocket path's one thread) would
    only linger there: close it with the request. Runs on the request's thread, so it closes that
    thread's connection only."""
    connections.close_all()
