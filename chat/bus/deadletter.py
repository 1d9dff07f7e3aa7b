"""The dead-letter topic's writer: records the worker cannot apply go to `<topic>.dead` with the
reason and where they came from, never silently away."""

import logging
import threading
import time
from collections.abc import Callable

from kafka.errors import KafkaError

from chat import metrics
from chat.bus.client import client_kwargs
from chat.bus.topics import dead_letter_topic

logger = logging.getLogger(__name__)

MAX_BACKOFF = 10.0


class DeadLetters:
    """One producer for a worker's dead letters, shared by its writer threads."""

    def __init__(self, topic: str) -> None:
        self.topic = dead_letter_topic(topic)
        self._producer = None
        self._lock = threading.Lock()

    def send(self, record, reason: str, *, stopping: Callable[[], bool]) -> None:
        """Send `record` with `reason` and wait until Kafka has it. While Kafka is unreachable, retry
        with backoff: the batch's offsets must not be committed without it, and nothing can be
        fetched meanwhile anyway; SystemExit if the worker is stopping (the record is read again)."""
        source = f"{record.topic}:{record.partition}:{record.offset}"
        headers = [("reason", reason.encode()), ("source", source.encode())]
        delay, pending = 0.5, None
        while True:
            try:
                if pending is None:
                    pending = self._get().send(self.topic, key=record.key, value=record.value or b"", headers=headers)
                pending.get(timeout=10)
                break
            except KafkaError as exc:
                if pending is not None and pending.is_done:
                    pending = None  # refused for good: send it again. A wait that ran out keeps waiting on the
                    # same send, which the producer retries itself, so Kafka never gets the record twice
                if stopping():
                    raise SystemExit("stopping before a record was dead-lettered; it is read again at the next "
                                     "start") from exc
                logger.warning("could not dead-letter record %s (%s); retrying in %.1f s", source,
                               exc.__class__.__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        metrics.WORKER_DEAD_LETTERED.inc()
        logger.warning("record %s dead-lettered: %s", source, reason)

    def _get(self):
        from kafka import KafkaProducer

        with self._lock:
            if self._producer is None:
                # Made at the first dead letter, maybe while Kafka is gone: a bounded bootstrap
                # (kafka-python waits 30 s by default) so the retry loop logs and backs off.
                self._producer = KafkaProducer(**client_kwargs(), acks="all", max_block_ms=5_000,
                                               bootstrap_timeout_ms=10_000)
            return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
