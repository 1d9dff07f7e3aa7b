"""Topic housekeeping against the real broker: a run's topics are created with their dead-letter
topic and deleted by prefix, without touching anyone else's."""

from django.conf import settings
from kafka.admin import KafkaAdminClient

from chat.bus.topics import delete_topics, ensure_topics
from tests.support import unique_topic, wait_until


def topic_names() -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=15_000)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_delete_topics_removes_a_prefix_and_nothing_else():
    doomed, kept = unique_topic("doomed"), unique_topic("kept")
    ensure_topics(topic=doomed, partitions=2)
    ensure_topics(topic=kept, partitions=1)
    assert {doomed, f"{doomed}.dead", kept, f"{kept}.dead"} <= topic_names()

    assert delete_topics(prefix=doomed) == 2

    wait_until(lambda: not {doomed, f"{doomed}.dead"} & topic_names(), timeout=30, message="topics deleted")
    assert {kept, f"{kept}.dead"} <= topic_names()
    delete_topics(prefix=kept)
