"""Prometheus metrics of a web process (served at /metrics) and of a worker (its own port).

Names follow Prometheus conventions; label values are bounded (frame types, close codes, partitions).
"""

import gc
import time

from prometheus_client import Counter, Gauge, Histogram

# --- web ---
CONNECTIONS = Gauge("chat_connections_open", "WebSocket connections open on this process")
FRAMES_IN = Counter("chat_frames_in_total", "Client frames received, by type", ["type"])
FRAMES_OUT = Counter("chat_frames_out_total", "Frames queued to sockets, by type", ["type"])
MESSAGES_SENT = Counter("chat_messages_sent_total", "Messages sequenced and broadcast")
SEND_ACK_SECONDS = Histogram(
    "chat_send_ack_seconds", "From receiving message.send to the ack (includes Kafka)",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FANOUT_DELIVERIES = Counter("chat_fanout_deliveries_total", "Room frames handed to local sockets by the hub")
RATE_LIMITED = Counter("chat_rate_limited_total", "Sends refused by the rate limit")
ERRORS_SENT = Counter("chat_errors_sent_total", "Error frames sent, by code", ["code"])
CLOSES = Counter("chat_socket_closes_total", "Sockets closed by the server, by close code", ["code"])
ACCEPT_PAUSES = Counter("chat_accept_pauses_total",
                        "Times this process stopped accepting connections: CHAT_MAX_PENDING_JOINS joins under way")
SLOW_CONSUMER_CUTS = Counter("chat_slow_consumer_cuts_total", "Sockets cut (4408) for not reading their frames")
HUB_GAPS = Counter("chat_hub_gaps_total", "Room messages this instance missed (sockets sent to resume with 1012)")
REPLAY_INCOMPLETE = Counter("chat_replay_incomplete_total",
                            "Resumes past the recent buffer that could not wait for the workers to store the room")
KAFKA_PRODUCE_ERRORS = Counter("chat_kafka_produce_errors_total", "Records the Kafka producer gave up on")
DEPENDENCY_UP = Gauge("chat_dependency_up", "1 when the dependency answered this instance's last readiness check",
                      ["dependency"])
GC_PAUSES = Histogram(
    "chat_gc_pause_seconds", "Garbage collections of this process, by generation: every socket waits meanwhile",
    ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# --- worker ---
WORKER_RECORDS = Counter("chat_worker_records_total", "Kafka records applied to Postgres")
WORKER_BATCH_SIZE = Histogram("chat_worker_batch_size", "Records per Postgres write",
                              buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000))
WORKER_LAG = Gauge("chat_worker_lag", "Records behind the end of the log, per partition", ["partition"])
WORKER_RETRIES = Counter("chat_worker_retries_total", "Batches retried after a database error")
WORKER_DEAD_LETTERED = Counter("chat_worker_dead_lettered_total", "Records sent to the dead-letter topic")
# The Kafka cluster as a worker sees it (chat/bus/clusterwatch.py), for alerts on lost redundancy.
KAFKA_BROKERS = Gauge("chat_kafka_brokers", "Brokers registered in the Kafka cluster, up or not")
KAFKA_BROKER_REACHABLE = Gauge("chat_kafka_broker_reachable", "1 when the broker answered the worker's last probe",
                               ["broker"])
KAFKA_UNDER_MIN_ISR = Gauge("chat_kafka_partitions_under_min_isr",
                            "Partitions with fewer in-sync replicas than min.insync.replicas (sends to them fail)",
                            ["topic"])
KAFKA_UNDER_REPLICATED = Gauge("chat_kafka_partitions_under_replicated",
                               "Partitions with a replica out of sync", ["topic"])
KAFKA_OFFLINE = Gauge("chat_kafka_partitions_offline", "Partitions without a leader", ["topic"])
WORKER_SEQ_REASSIGNED = Counter("chat_worker_seq_reassigned_total",
                                "Acked messages stored under a new seq because a different message had theirs")
WORKER_RESENDS = Counter("chat_worker_resends_total",
                         "Records of a second id for one (author, room, client_id): a re-send, not stored again")


def watch_gc_pauses() -> None:
    """Time every garbage collection of this process into GC_PAUSES (a full one walks every object
    of every socket held). The labelled children exist beforehand: creating one takes the metric's
    lock, which the collection may have interrupted."""
    pauses = [GC_PAUSES.labels(generation=str(generation)) for generation in range(3)]
    started = 0.0

    def on_collection(phase: str, info: dict) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses[info["generation"]].observe(time.perf_counter() - started)

    gc.callbacks.append(on_collection)


# --- worker: retention (chat/services/retention.py) ---
WORKER_PAST_RETENTION = Counter("chat_worker_records_past_retention_total",
                                "Records not applied because their message is past its room's retention "
                                "(a replay of pruned messages)")
