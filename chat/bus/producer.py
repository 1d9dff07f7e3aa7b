"""The Kafka producer of a web process, kept off the event loop.

kafka-python blocks (bootstrap, metadata waits, a full buffer), so every call runs on one
dedicated thread, and its delivery future is bridged back to the loop that asked.
"""

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from kafka.errors import KafkaTimeoutError

from chat.bus import records
from chat.bus.client import client_kwargs

logger = logging.getLogger(__name__)

DEADLINE_GRACE = 0.5  # seconds kafka-python's own expiry may lag the delivery timeout before it counts as stuck


class MessageProducer:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        delivery = settings.KAFKA_DELIVERY_TIMEOUT_MS
        # A request to a broker that went silent is given up on in time for a retry (to the
        # partition's new leader) within the delivery timeout, which kafka-python wants above it.
        self._request_timeout_ms = min(5_000, max(1_000, delivery // 2))
        self._delivery_timeout_ms = max(delivery, self._request_timeout_ms + settings.KAFKA_LINGER_MS)
        self._producer = None
        # One thread: construction happens once, and records from this process keep their order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-producer")
        # Records wait here for that thread, which takes all waiting at once: under load one
        # thread hand-off carries many records instead of one each.
        self._waiting: deque[tuple[dict, asyncio.AbstractEventLoop, asyncio.Future, list]] = deque()
        self._handoff_lock = threading.Lock()
        self._handoff_scheduled = False
        self._replaced_at = float("-inf")

    def _get(self):
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                **client_kwargs(),
                acks="all",
                enable_idempotence=True,
                linger_ms=settings.KAFKA_LINGER_MS,  # batches under load; adds at most this to an ack
                max_block_ms=min(5_000, self._delivery_timeout_ms),
                # Made while Kafka may be gone: the sends waiting on it hear within their timeout.
                bootstrap_timeout_ms=min(10_000, self._delivery_timeout_ms),
                request_timeout_ms=self._request_timeout_ms,
                delivery_timeout_ms=self._delivery_timeout_ms,
                retry_backoff_ms=200,
            )
        return self._producer

    async def send(self, record: dict) -> None:
        """Resolves when Kafka has the record (acks=all); raises when the producer gives up."""
        loop = asyncio.get_running_loop()
        delivered = loop.create_future()
        answered: list = []  # kafka-python's answer about this record, once it gives one
        with self._handoff_lock:
            self._waiting.append((record, loop, delivered, answered))
            schedule, self._handoff_scheduled = not self._handoff_scheduled, True
        if schedule:
            self._executor.submit(self._produce_waiting)
        deadline = loop.call_later(self._delivery_timeout_ms / 1000, self._expire, loop, delivered, answered)
        try:
            await delivered
        finally:
            deadline.cancel()

    def _expire(self, loop: asyncio.AbstractEventLoop, delivered: asyncio.Future, answered: list) -> None:
        """The delivery timeout passed: the sender hears now, whatever kafka-python does."""
        _settle(delivered, KafkaTimeoutError(f"no acknowledgement within {self._delivery_timeout_ms} ms"))
        loop.call_later(DEADLINE_GRACE, self._check_answered, answered)

    def _check_answered(self, answered: list) -> None:
        """kafka-python expires a record at its delivery timeout too, unless it is stuck: after
        expiring a record it had sent, its idempotent producer registers anew before it sends or
        expires anything else, and with the controller quorum lost that never ends, not even once
        the brokers are back. A record left unanswered replaces it (at most once a delivery timeout)."""
        now = time.monotonic()
        if not answered and now - self._replaced_at >= self._delivery_timeout_ms / 1000:
            self._replaced_at = now
            self._executor.submit(self._replace)

    def _replace(self) -> None:
        """On the producer thread: the next record gets a new producer; the old one's records fail."""
        old, self._producer = self._producer, None
        if old is not None:
            logger.warning("the Kafka producer left a record unanswered past its delivery timeout: replacing it")
            old.close(timeout=0)

    def _produce_waiting(self) -> None:
        """On the producer thread: hand every waiting record to kafka-python, in order."""
        while True:
            with self._handoff_lock:
                if not self._waiting:
                    self._handoff_scheduled = False
                    return
                batch, self._waiting = self._waiting, deque()
            for record, loop, delivered, answered in batch:
                try:
                    future = self._get().send(self.topic, key=records.record_key(record),
                                              value=records.encode(record))
                except Exception as exc:  # noqa: BLE001 - reported to the sender as not_persisted
                    _answer(loop, delivered, answered, exc)
                    continue
                future.add_callback(lambda _, loop=loop, delivered=delivered, answered=answered:
                                    _answer(loop, delivered, answered, None))
                future.add_errback(lambda exc, loop=loop, delivered=delivered, answered=answered:
                                   _answer(loop, delivered, answered, exc))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def _answer(loop, delivered: asyncio.Future, answered: list, exc: BaseException | None) -> None:
    """From kafka-python's thread: note its answer and pass it to the sender's loop."""
    answered.append(exc)
    loop.call_soon_threadsafe(_settle, delivered, exc)


def _settle(delivered: asyncio.Future, exc: BaseException | None) -> None:
    if not delivered.done():
        delivered.set_exception(exc) if exc else delivered.set_result(None)


_producer: MessageProducer | None = None
_lock = threading.Lock()


def get_producer() -> MessageProducer:
    global _producer
    with _lock:
        if _producer is None:
            _producer = MessageProducer(settings.KAFKA_TOPIC)
        return _producer
