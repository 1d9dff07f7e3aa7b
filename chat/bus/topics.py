"""Creates the message topic (several partitions, so workers scale) and its dead-letter topic."""

import logging
import threading

from django.conf import settings

logger = logging.getLogger(__name__)


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dead"


def ensure_topics(*, topic: str | None = None, partitions: int | None = None) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topic = topic or settings.KAFKA_TOPIC
    partitions = partitions or settings.KAFKA_TOPIC_PARTITIONS
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=15_000)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name=name, num_partitions=count, replication_factor=1)
            for name, count in ((topic, partitions), (dead_letter_topic(topic), 1))
            if name not in existing
        ]
        if wanted:
            try:
                admin.create_topics(wanted)
                logger.info("created Kafka topics %s", ", ".join(t.name for t in wanted))
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
    finally:
        admin.close()


def delete_topics(*, prefix: str) -> int:
    """Deletes every topic whose name starts with `prefix` (a test or benchmark run's own); returns
    how many: runs that leave theirs behind pile thousands of partitions up on a development broker."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=30_000)
    try:
        names = [name for name in admin.list_topics() if name.startswith(prefix)]
        if names:
            admin.delete_topics(names, timeout_ms=30_000)
        return len(names)
    finally:
        admin.close()


_admin = None
_admin_lock = threading.Lock()


def cluster_answers() -> bool:
    """Blocking: whether a broker answers a metadata request now (not from a cache), for readiness."""
    global _admin
    from kafka.admin import KafkaAdminClient

    with _admin_lock:
        if _admin is None:
            _admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=2_500,
                                      reconnect_backoff_max_ms=1_000)
        admin = _admin
    return bool(admin.describe_cluster().get("brokers"))
