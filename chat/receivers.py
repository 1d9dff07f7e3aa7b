"""Receivers of the post-send signals: enqueue the record to Kafka, or store it inline when the
embedded default runs without Kafka. Either way the sender is acked only after this returns."""

from channels.db import database_sync_to_async
from django.conf import settings
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
