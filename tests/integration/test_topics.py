"""Topic housekeeping against the real broker: a run's topics are created with their dead-letter
topic, replicated as the broker count allows, checked when they exist, and deleted by prefix
without touching anyone else's. (Three brokers: tests/faults/test_kafka_cluster.py.)"""

import threading

import pytest
from django.conf import settings
from django.test import override_settings
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaTimeoutError

from chat.bus.topics import admin_client, delete_topics, ensure_topics
from tests.support import free_port, unique_topic, wait_until


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


def describe(name: str) -> tuple[int, int, dict[str, str]]:
    """(partitions, replicas per partition, the topic's replication configs) as the broker has them."""
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, request_timeout_ms=15_000)
    try:
        (info,) = admin.describe_topics([name])
        wanted = ["min.insync.replicas", "unclean.leader.election.enable"]
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, wanted)],
                                         config_filter="all")["topic"][name]
    finally:
        admin.close()
    replicas = {len(p["replica_nodes"]) for p in info["partitions"]}
    assert len(replicas) == 1, info
    return len(info["partitions"]), replicas.pop(), {key: configs[key]["value"] for key in wanted}


def test_topics_get_the_brokers_replication_and_the_dead_letter_topic_the_message_topics_partitions():
    # The single test broker: a factor of 3 is more than it has, so every topic gets 1 replica, min ISR 1.
    topic = unique_topic("replicated")
    assert ensure_topics(topic=topic, partitions=3) == []
    expected = {"min.insync.replicas": "1", "unclean.leader.election.enable": "false"}
    assert describe(topic) == (3, 1, expected)
    assert describe(f"{topic}.dead") == (3, 1, expected)
    # Run again (every worker start does): nothing to create, nothing to report.
    assert ensure_topics(topic=topic, partitions=3) == []
    delete_topics(prefix=topic)


def test_an_existing_topic_below_the_configured_replication_or_partitions_is_reported_not_changed():
    topic = unique_topic("thin")
    ensure_topics(topic=topic, partitions=2)
    with override_settings(KAFKA_REPLICATION_FACTOR=3, KAFKA_MIN_INSYNC_REPLICAS=2):
        problems = ensure_topics(topic=topic, partitions=4)
    assert len(problems) == 5, problems
    assert sum("1 replica(s) per partition, fewer than the 3 configured" in p for p in problems) == 2
    assert sum("min.insync.replicas 1, fewer than the 2 configured" in p for p in problems) == 2
    assert any(f"topic {topic} has 2 partitions, KAFKA_TOPIC_PARTITIONS is 4" in p for p in problems)
    assert describe(topic)[:2] == (2, 1)
    delete_topics(prefix=topic)


def test_an_admin_client_that_cannot_bootstrap_leaves_no_thread_running():
    """Readiness and the worker's cluster watch build one per check while Kafka is unreachable."""
    before = threading.active_count()
    with override_settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"):
        for _ in range(3):
            with pytest.raises(KafkaTimeoutError):
                admin_client(bootstrap_timeout_ms=300)
    assert threading.active_count() == before
