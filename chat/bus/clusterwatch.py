"""A worker's watch on the Kafka cluster, for its metrics and log: which brokers answer, and which
partitions of the app's topics lost redundancy (an in-sync replica set under min.insync.replicas,
where acks=all sends fail; a replica out of sync; no leader at all).

It runs on a thread of its own every PERIOD seconds, so the consuming loop never waits on it. With
the controller quorum lost (two of three combined nodes down) the cluster's metadata stands still,
in-sync sets included: then only the unreachable brokers show it.
"""

import logging
import threading

from chat import metrics
from chat.bus.topics import admin_client

logger = logging.getLogger(__name__)

PERIOD = 15.0
PROBE_TIMEOUT_MS = 3_000


class ClusterWatch(threading.Thread):
    def __init__(self, topics: list[str], *, period: float = PERIOD) -> None:
        super().__init__(name="kafka-cluster-watch", daemon=True)
        self.topics = topics
        self.period = period
        self._stopping = threading.Event()
        self._admin = None
        self._brokers: list[int] = []  # as last described
        self._reported: dict[str, object] = {}  # what was logged last, so each change is logged once

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._check_until_one_answers()
                except Exception as exc:  # noqa: BLE001 - the watch reports, it never stops the worker
                    self._report("cluster", f"no broker answers ({exc.__class__.__name__})")
                    for broker in self._brokers:
                        metrics.KAFKA_BROKER_REACHABLE.labels(broker=str(broker)).set(0)
                self._stopping.wait(self.period)
        finally:
            self._forget_admin()

    def _forget_admin(self) -> None:
        """Drop the admin client: the next check bootstraps a new one. Its metadata leaves out a
        fenced broker and is not refreshed when the broker returns, so a client that saw a broker
        go would never find it again."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def _check_until_one_answers(self) -> None:
        """A request may go to a broker that is down (and the client tries another next time): one
        attempt per broker before the cluster counts as unreachable."""
        for attempt in range(max(3, len(self._brokers)), 0, -1):
            try:
                return self.check()
            except Exception:
                if attempt == 1:
                    self._forget_admin()
                    raise

    def check(self) -> None:
        if self._admin is None:
            self._admin = admin_client(request_timeout_ms=PROBE_TIMEOUT_MS, bootstrap_timeout_ms=PROBE_TIMEOUT_MS)
        admin = self._admin
        self._brokers = brokers = sorted(broker["broker_id"] for broker in admin.describe_cluster()["brokers"])
        metrics.KAFKA_BROKERS.set(len(brokers))
        down = [broker for broker in brokers if not self._answers(admin, broker)]
        self._report("cluster", f"brokers {','.join(map(str, down))} of {len(brokers)} unreachable" if down else None)
        for topic in admin.describe_topics(self.topics):
            if topic["error_code"]:
                continue  # not created yet
            min_insync = self._min_insync(admin, topic["name"])
            partitions = topic["partitions"]
            under_min = sorted(p["partition_index"] for p in partitions if len(p["isr_nodes"]) < min_insync)
            lagging = sum(len(p["isr_nodes"]) < len(p["replica_nodes"]) for p in partitions)
            offline = sum(p["leader_id"] < 0 for p in partitions)
            metrics.KAFKA_UNDER_MIN_ISR.labels(topic=topic["name"]).set(len(under_min))
            metrics.KAFKA_UNDER_REPLICATED.labels(topic=topic["name"]).set(lagging)
            metrics.KAFKA_OFFLINE.labels(topic=topic["name"]).set(offline)
            self._report(topic["name"], f"partitions {','.join(map(str, under_min))} of {topic['name']} have fewer "
                                        f"in-sync replicas than min.insync.replicas ({min_insync}): sends to "
                                        "them fail" if under_min else None)
        if down:
            self._forget_admin()

    def _answers(self, admin, broker: int) -> bool:
        """Whether `broker` itself answers a request (a describe of its own config goes to it alone)."""
        from kafka.admin import ConfigResource, ConfigResourceType

        try:
            admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(broker), ["broker.id"])])
            answered = True
        except Exception:  # noqa: BLE001 - any failure means it did not answer
            answered = False
        metrics.KAFKA_BROKER_REACHABLE.labels(broker=str(broker)).set(int(answered))
        return answered

    def _min_insync(self, admin, topic: str) -> int:
        from kafka.admin import ConfigResource, ConfigResourceType

        resource = ConfigResource(ConfigResourceType.TOPIC, topic, ["min.insync.replicas"])
        configs = admin.describe_configs([resource], config_filter="all")["topic"][topic]
        return int(configs["min.insync.replicas"]["value"])

    def _report(self, subject: str, problem: str | None) -> None:
        """Log a problem when it starts and when it ends, not at every check."""
        before = self._reported.get(subject)
        if problem == before:
            return
        self._reported[subject] = problem
        if problem:
            logger.warning("Kafka: %s", problem)
        elif before:
            logger.info("Kafka: %s is whole again (was: %s)", subject, before)
