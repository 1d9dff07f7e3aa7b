"""What a worker tells about itself: its counters, how far it is behind the log (the
chat_worker_lag gauge, for the partitions it holds) and the progress line."""

import time
from dataclasses import dataclass, field

from kafka.errors import KafkaTimeoutError

from chat import metrics

LAG_TIMEOUT_MS = 2_000  # the progress line's lag: reported as -1 rather than waited for


@dataclass
class WorkerStats:
    records: int = 0
    inserted: int = 0
    dead: int = 0
    retries: int = 0
    batches: int = 0
    last_batch: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self, lag: int) -> str:
        rate = self.records / max(1e-9, time.monotonic() - self.started)
        return (f"records={self.records} rate={rate:.0f}/s last_batch={self.last_batch} "
                f"lag={lag} dead={self.dead} retries={self.retries}")


class Lag:
    """A consumer's lag per partition it holds, into chat_worker_lag; a partition that went to
    another worker leaves this worker's gauge (that one reports it now)."""

    def __init__(self) -> None:
        self._reported: set[str] = set()

    def measure(self, consumer) -> int:
        """Records behind the end of the log (KafkaTimeoutError when Kafka does not answer in time)."""
        partitions = consumer.assignment()
        behind = {}
        if partitions:
            # Bounded: without a timeout, position() waits for the group coordinator for as long as
            # it takes, and after a Kafka outage that stalled the whole loop (SIGTERM included).
            ends = consumer.end_offsets(list(partitions), timeout_ms=LAG_TIMEOUT_MS)
            positions = {tp: consumer.position(tp, timeout_ms=LAG_TIMEOUT_MS) for tp in partitions}
            if None in positions.values():
                raise KafkaTimeoutError("the consumer's positions are not known yet")
            behind = {str(tp.partition): max(0, ends[tp] - positions[tp]) for tp in partitions}
        for partition, lag in behind.items():
            metrics.WORKER_LAG.labels(partition=partition).set(lag)
        for gone in self._reported - set(behind):
            metrics.WORKER_LAG.remove(gone)
        self._reported = set(behind)
        return sum(behind.values())
