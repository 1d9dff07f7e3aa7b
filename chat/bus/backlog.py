"""Whether the workers have stored what Kafka holds for a room.

A resume that reaches past the recent buffer in Redis reads Postgres, and a message that is acked
(in Kafka) may not be there yet, above all after Redis restarted empty and took the buffer with it.
Such a resume first waits for the workers' consumer group to commit past the end the room's
partition had when the resume asked: from then on, Postgres holds everything acked before it.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from chat import metrics
from chat.bus.client import client_kwargs

logger = logging.getLogger(__name__)

# kafka-python's clients are not thread-safe and block: one thread of their own serves them.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-backlog")
_client = None
_lock = threading.Lock()


def _consumer():
    global _client
    from kafka import KafkaConsumer

    with _lock:
        if _client is None:
            # A group member in name only: it never subscribes, so it never joins or rebalances the
            # group; it only reads the group's committed offsets and the partitions' ends.
            _client = KafkaConsumer(**client_kwargs(), group_id=settings.KAFKA_CONSUMER_GROUP,
                                    enable_auto_commit=False, request_timeout_ms=5_000, bootstrap_timeout_ms=5_000)
        return _client


def room_partition(room_id: int, partitions: list[int]) -> int:
    """The partition the producer's default partitioner picks for the room's key."""
    from kafka.partitioner.default import murmur2

    from chat.bus.records import record_key

    ordered = sorted(partitions)
    return ordered[(murmur2(record_key({"room_id": room_id})) & 0x7FFFFFFF) % len(ordered)]


def _wait_stored(room_id: int, timeout: float) -> bool:
    from kafka import TopicPartition

    deadline = time.monotonic() + timeout
    consumer = _consumer()
    partitions = consumer.partitions_for_topic(settings.KAFKA_TOPIC)
    if not partitions:  # no metadata (Kafka restarting, say): nothing says the room is stored
        logger.warning("no partitions known for topic %s (Kafka unreachable or restarting?); room %s's resume "
                       "stops and is made again later", settings.KAFKA_TOPIC, room_id)
        return False
    tp = TopicPartition(settings.KAFKA_TOPIC, room_partition(room_id, list(partitions)))
    end = consumer.end_offsets([tp], timeout_ms=int(timeout * 1000))[tp]
    while True:
        committed = consumer.committed(tp, timeout_ms=int(max(0.1, deadline - time.monotonic()) * 1000)) or 0
        if committed >= end:
            return True
        if time.monotonic() >= deadline:
            logger.warning("workers of group %s have not stored room %s's messages within %.0f s "
                           "(partition %s: committed %s of %s); the resume stops and is made again later",
                           settings.KAFKA_CONSUMER_GROUP, room_id, timeout, tp.partition, committed, end)
            return False
        time.sleep(0.05)


async def wait_stored(room_id: int) -> bool:
    """Wait (bounded by CHAT_REPLAY_CATCHUP_SECONDS) until Postgres holds every message of the room
    that Kafka accepted before now; False when it did not happen in time. No Kafka: nothing to wait for."""
    if not settings.KAFKA_BOOTSTRAP_SERVERS:
        return True
    timeout = settings.CHAT_REPLAY_CATCHUP_SECONDS
    loop = asyncio.get_running_loop()
    try:
        stored = await asyncio.wait_for(loop.run_in_executor(_executor, _wait_stored, room_id, timeout),
                                        timeout + 10)
    except Exception:  # Kafka unreachable: resume from Postgres rather than not at all
        logger.exception("could not check the workers' progress for room %s", room_id)
        stored = False
    if not stored:
        metrics.REPLAY_INCOMPLETE.inc()
    return stored
