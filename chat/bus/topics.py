"""The app's topics: the message topic (several partitions, so workers scale) and its dead-letter
topic (as many partitions, so a room's records keep their order there too), each replicated over
the brokers with min.insync.replicas set (KAFKA_REPLICATION_FACTOR, KAFKA_MIN_INSYNC_REPLICAS).
Topics that exist already are never changed, only checked: a warning names each shortfall."""

import logging
import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat.bus.client import client_kwargs

logger = logging.getLogger(__name__)

# Set on every topic the app creates: a replica that fell behind never becomes leader (it would
# drop acknowledged records); Kafka's default, written down so a broker-wide change cannot undo it.
NO_UNCLEAN_ELECTION = {"unclean.leader.election.enable": "false"}


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dead"


def admin_client(**options):
    """A bootstrapped KafkaAdminClient. One that cannot bootstrap raises, its IO thread stopped:
    kafka-python leaves it running, so a probe retried through an outage would pile them up."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(**client_kwargs(), **options)
    except Exception:
        if hasattr(admin, "_net"):  # got as far as starting its thread (kafka-python 3.0's attributes)
            admin._closed = False
            admin.close()
        raise
    return admin


def replication(broker_count: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for the app's topics on a cluster of
    `broker_count` brokers: the settings, else 3 (or every broker when fewer) and 2 when that is 3."""
    factor = settings.KAFKA_REPLICATION_FACTOR or max(1, min(3, broker_count))
    min_insync = settings.KAFKA_MIN_INSYNC_REPLICAS or (2 if factor == 3 else 1)
    if not 1 <= min_insync <= factor:
        raise ImproperlyConfigured(f"KAFKA_MIN_INSYNC_REPLICAS={min_insync} must be between 1 and the "
                                   f"replication factor ({factor})")
    return factor, min_insync


def registered_brokers(admin) -> int:
    """Brokers the cluster has, whether up or fenced (down) now: one that is down still counts, so
    a topic created meanwhile fails rather than getting fewer replicas for good."""
    return len(admin.describe_cluster()["brokers"])


def ensure_topics(*, topic: str | None = None, partitions: int | None = None) -> list[str]:
    """Create the message topic and its dead-letter topic when missing; check those that exist.
    Returns the shortfalls found (each also logged as a warning)."""
    from kafka.errors import TopicAlreadyExistsError

    topic = topic or settings.KAFKA_TOPIC
    partitions = partitions or settings.KAFKA_TOPIC_PARTITIONS
    dead = dead_letter_topic(topic)
    admin = admin_client(request_timeout_ms=15_000)
    try:
        factor, min_insync = replication(registered_brokers(admin))
        existing = {t["name"]: t for t in admin.describe_topics([topic, dead]) if t["error_code"] == 0}
        # The dead letters of a room go to the partition its records came from.
        counts = {topic: len(existing[topic]["partitions"]) if topic in existing else partitions}
        counts[dead] = counts[topic]
        wanted = {name: {"num_partitions": counts[name], "replication_factor": factor,
                         "configs": {"min.insync.replicas": str(min_insync), **NO_UNCLEAN_ELECTION}}
                  for name in (topic, dead) if name not in existing}
        if wanted:
            try:
                admin.create_topics(wanted, timeout_ms=15_000)
                logger.info("created Kafka topics %s (%d replicas, min.insync.replicas %d)",
                            ", ".join(wanted), factor, min_insync)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
            admin.wait_for_topics(list(wanted), timeout_ms=30_000)
        problems = _shortfalls(admin, [existing[name] for name in (topic, dead) if name in existing],
                               factor, min_insync)
        if topic in existing and counts[topic] != partitions:
            problems.append(f"topic {topic} has {counts[topic]} partitions, KAFKA_TOPIC_PARTITIONS is {partitions}: "
                            "left as it is (a new count moves rooms to other partitions; see docs/scaling.md)")
    finally:
        admin.close()
    for problem in problems:
        logger.warning("%s", problem)
    return problems


def _shortfalls(admin, described: list[dict], factor: int, min_insync: int) -> list[str]:
    """What existing topics lack against the configured replication."""
    from kafka.admin import ConfigResource, ConfigResourceType

    problems = []
    for info in described:
        replicas = min(len(p["replica_nodes"]) for p in info["partitions"])
        if replicas < factor:
            problems.append(f"topic {info['name']} has {replicas} replica(s) per partition, fewer than the "
                            f"{factor} configured: one broker's disk may hold the only copy of acknowledged "
                            "messages (add replicas by reassignment, docs/scaling.md)")
    if described:
        resources = [ConfigResource(ConfigResourceType.TOPIC, info["name"], ["min.insync.replicas"])
                     for info in described]
        configs = admin.describe_configs(resources, config_filter="all")["topic"]
        for name, config in configs.items():
            value = int(config["min.insync.replicas"]["value"])
            if value < min_insync:
                problems.append(f"topic {name} has min.insync.replicas {value}, fewer than the {min_insync} "
                                "configured: an ack may rest on fewer copies (kafka-configs --alter, docs/scaling.md)")
    return problems


def delete_topics(*, prefix: str) -> int:
    """Deletes every topic whose name starts with `prefix` (a test or benchmark run's own); returns
    how many: runs that leave theirs behind pile thousands of partitions up on a development broker."""
    admin = admin_client(request_timeout_ms=30_000)
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

    with _admin_lock:
        if _admin is None:
            # Bounded like a request: an unreachable cluster frees the readiness thread (and a
            # stopping process, which waits for it) in seconds, not kafka-python's 30.
            _admin = admin_client(request_timeout_ms=2_500, bootstrap_timeout_ms=2_500)
        admin = _admin
    return bool(admin.describe_cluster().get("brokers"))
