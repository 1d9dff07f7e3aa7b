"""The consuming loop behind `consume_messages`: Kafka -> idempotent bulk writes -> commit.

Offsets are committed only after the Postgres transactions commit, so a crash at any point
replays records the database may already hold, and the write ignores those.

Two stages overlap: writer threads decode and write a batch (waiting on Postgres most of the time,
without the GIL) while the main thread fetches and parses the next. The batch is split by room (the
record key) over the writers, each with its own connection and transaction, so Postgres works on a
batch with as many backends; a room's records stay in one writer, in order. Each writer has the next
batch's part queued behind the one it is writing, so it never waits for the main thread or for the
other writers; a room still being written keeps its writer in the next batch, so its creates, edits
and deletes apply in order. The main thread commits a batch's offsets (its own, not the consumer's
position, which is ahead) once every part is written; a rebalance commits them from the revoke hook.
One more thread merges the search index's new entries after each batch (storage.search_index_tidy),
beside the writers rather than inside one of their inserts.
"""

import logging
import signal
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, ProgrammingError, close_old_connections, connection
from kafka import AsyncConsumerRebalanceListener, OffsetAndMetadata
from kafka.errors import CommitFailedError, FencedInstanceIdError, KafkaError

from chat import metrics, storage
from chat.bus import records
from chat.bus.client import client_kwargs
from chat.bus.clusterwatch import ClusterWatch
from chat.bus.deadletter import DeadLetters
from chat.bus.progress import Lag, WorkerStats
from chat.bus.topics import dead_letter_topic, ensure_topics

logger = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
BATCH_BYTES = 64 * 1024  # what a fetch gathers before the broker answers, WORKER_BATCH_WAIT_MS at most
KEEP_CONNECTION = 1.0  # seconds between batches within which the writer keeps its database connection
COMMIT_TIMEOUT_MS = 10_000  # an offset commit Kafka does not answer is retried later, not waited on for minutes


@dataclass
class _Batch:
    """Records polled together, the offsets to commit once they are stored, their writes (writer ->
    its part's write) and the writer each room went to."""

    records: list
    offsets: dict
    writes: dict[int, Future]
    rooms: dict[bytes, int]


class _Rebalance(AsyncConsumerRebalanceListener):
    """Commits the batch being written before its partitions go, so the next owner starts after it.

    kafka-python runs these hooks on its IO loop, where its blocking calls (`commit`) are refused:
    the commit here is the awaited asynchronous one."""

    def __init__(self, worker: "MessageWorker") -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        offsets = self.worker._take_uncommitted(None)
        while (written := self.worker._collect()) is not None:  # waits on the writers, not on Kafka
            offsets.update(written.offsets)
        if offsets:
            try:
                await self.worker._consumer.commit_async(offsets)
            except KafkaError as exc:
                # Too late for this generation: the new owner re-reads the batch, which the
                # idempotent write makes harmless.
                logger.warning("offset commit before a rebalance failed: %s", exc)
        if revoked:
            self.worker._say(f"partitions revoked: {_partition_list(revoked)}")

    async def on_partitions_assigned(self, assigned) -> None:
        self.worker._say(f"partitions assigned: {_partition_list(assigned)}")


def _partition_list(partitions) -> str:
    return ",".join(str(tp.partition) for tp in sorted(partitions, key=lambda tp: tp.partition)) or "none"


class MessageWorker:
    def __init__(self, *, group_id: str, topic: str | None = None, max_records: int = 5000, writers: int = 2,
                 idle_exit: float | None = None, progress_every: float = 5.0, instance_id: str | None = None,
                 cluster_check_every: float = 15.0, out=None) -> None:
        if writers < 1:
            raise ValueError("at least one writer")
        self.topic = topic or settings.KAFKA_TOPIC
        self.group_id = group_id
        self.instance_id = instance_id or None
        self.max_records = max_records
        self.idle_exit = idle_exit
        self.progress_every = progress_every
        self.cluster_check_every = cluster_check_every
        self.out = out
        self.stats = WorkerStats()
        self.stopping = False
        self._consumer = None
        self._dead_letters = DeadLetters(self.topic)
        # One single-thread executor per writer: its queue keeps the parts it gets in order, and
        # Django gives each thread a connection of its own.
        self._writers: list[ThreadPoolExecutor] = []
        self._writer_count = writers
        self._last_write = [float("-inf")] * writers
        self._lock = threading.Lock()  # the writers share the stats
        self._writing: deque[_Batch] = deque()  # handed to the writers, oldest first; two at most
        # Offsets of stored batches whose commit Kafka refused (unreachable): committed with the next.
        self._uncommitted: dict = {}
        self._commit_retry_at = 0.0
        self._commit_backoff = 0.5
        self._poll_backoff = 0.5
        # One more thread and connection: merges the search index's new entries after each batch.
        self._tidier: ThreadPoolExecutor | None = None
        self._tidying: Future | None = None
        self._tidy_refused = False
        self._lag = Lag()

    def stop(self, *_args) -> None:
        """Finish and commit the current batch, then exit."""
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> WorkerStats:
        from kafka import KafkaConsumer

        ensure_topics(topic=self.topic)
        session = settings.WORKER_SESSION_TIMEOUT_MS
        self._consumer = KafkaConsumer(
            **client_kwargs(),
            group_id=self.group_id,
            # A static member: restarted with the same id, it gets its partitions back without a
            # rebalance; gone for good, they move on after the session timeout like any member's.
            group_instance_id=self.instance_id,
            session_timeout_ms=session,  # how long a dead worker's partitions wait for another
            heartbeat_interval_ms=max(500, session // 3),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            fetch_min_bytes=BATCH_BYTES,
            fetch_max_wait_ms=settings.WORKER_BATCH_WAIT_MS,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self._writers = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store{n}")
                         for n in range(self._writer_count)]
        self._tidier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-index")
        self._consumer.subscribe([self.topic], listener=_Rebalance(self))
        watch = ClusterWatch([self.topic, dead_letter_topic(self.topic)], period=self.cluster_check_every)
        watch.start()
        member = f" (instance {self.instance_id})" if self.instance_id else ""
        self._say(f"consuming {self.topic} as group {self.group_id}{member}")
        last_progress = last_record = time.monotonic()
        finished = False
        try:
            while not self.stopping:
                polled = self._poll()
                now = time.monotonic()
                self._finish(then=polled)
                if polled:
                    last_record = now
                elif self.idle_exit is not None and now - last_record >= self.idle_exit:
                    self._say(f"idle for {self.idle_exit:g} s, stopping")
                    break
                if now - last_progress >= self.progress_every:
                    self._progress()
                    last_progress = now
            self._finish(last=True)
            finished = True
        finally:
            if not finished:
                # Leaving on an error: let a write in progress end (a failing one gives up, as on
                # SIGTERM), drop those queued and commit nothing more; the next start replays them.
                self.stopping = True
                for batch in self._writing:
                    for write in batch.writes.values():
                        write.cancel()
                self._writing.clear()
            for thread in [*self._writers, self._tidier]:
                thread.submit(lambda: connection.close())  # that thread's connection
                thread.shutdown(wait=True)
            watch.stop()
            self._consumer.close(autocommit=False)
            self._dead_letters.close()
        self._say(f"stopped after {self.stats.records} records ({self.stats.inserted} new, {self.stats.dead} dead)")
        return self.stats

    def _poll(self) -> dict:
        """The next records (only those fetched already while a batch is being written, so its
        offsets are committed at once: resumes wait on the group's committed offsets). A broker
        lost mid-request (the group coordinator's lookup, a metadata refresh) is polled past."""
        try:
            polled = self._consumer.poll(timeout_ms=0 if self._writing else 500, max_records=self.max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            logger.warning("Kafka poll failed (%s); polling again in %.1f s", exc.__class__.__name__,
                           self._poll_backoff)
            time.sleep(self._poll_backoff)
            self._poll_backoff = min(self._poll_backoff * 2, MAX_BACKOFF)
            return {}
        self._poll_backoff = 0.5
        return polled

    def _finish(self, then=None, *, last: bool = False) -> None:
        """Hand the writers the next batch (`then`, as polled), if any, wait for the one they were
        writing, and commit the offsets of the one written (with any whose commit failed before; the
        `last` call before exiting tries those at once)."""
        written = self._collect(then)
        retry_due = last or time.monotonic() >= self._commit_retry_at
        if written is None and not (self._uncommitted and retry_due):
            return
        offsets = self._take_uncommitted(written)
        try:
            self._consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except FencedInstanceIdError:
            raise  # another worker runs with this instance id: it owns the partitions now
        except CommitFailedError as exc:
            # The group rebalanced mid-batch: the new owner re-reads these records, and the
            # write makes that harmless.
            logger.warning("offset commit failed after a rebalance: %s", exc)
        except KafkaError as exc:
            # Kafka unreachable: the rows are stored, so go on and commit these offsets with the
            # next ones (or alone, with backoff, when no more come). A restart meanwhile re-reads
            # the batch, which the idempotent write makes harmless.
            self._uncommitted = offsets
            self._commit_retry_at = time.monotonic() + self._commit_backoff
            logger.warning("offset commit failed (%s); retrying in %.1f s or with the next batch",
                           exc.__class__.__name__, self._commit_backoff)
            self._commit_backoff = min(self._commit_backoff * 2, MAX_BACKOFF)
        else:
            self._commit_backoff = 0.5

    def _take_uncommitted(self, written: _Batch | None) -> dict:
        """The offsets to commit now: those whose commit failed before, moved on by `written`'s."""
        offsets, self._uncommitted = {**self._uncommitted, **(written.offsets if written else {})}, {}
        return offsets

    def _collect(self, then=None) -> _Batch | None:
        """Queue `then` (as polled) behind the batch the writers are writing, then wait for that one
        and count it; with nothing new, wait for what is being written. Returns the batch written
        (its offsets still to commit), if any. Between calls one batch at most is being written."""
        if then:
            self._writing.append(self._start(then))
            if len(self._writing) == 1:
                return None  # the writers were idle: nothing to wait for
        if not self._writing:
            return None
        done = self._writing.popleft()
        wait(done.writes.values())  # every part of it, even when one failed
        for write in done.writes.values():
            write.result()  # re-raises what stopped the write (SystemExit on SIGTERM while failing)
        self._tidy_search_index()
        self.stats.records += len(done.records)
        self.stats.batches += 1
        self.stats.last_batch = len(done.records)
        metrics.WORKER_RECORDS.inc(len(done.records))
        metrics.WORKER_BATCH_SIZE.observe(len(done.records))
        return done

    def _start(self, polled) -> _Batch:
        """Hand each writer its part of a polled batch: whole rooms (the key), each room's records in order.

        Not by partition: a poll mostly holds one or two partitions (kafka-python hands out one
        partition's fetch before the next), which would leave the other writers idle. A room whose
        part of the batch before is still being written goes to the same writer, behind it (rooms
        in different parts touch different rows); the other rooms go largest first to the shortest
        part."""
        records_by_room = defaultdict(list)
        for part in polled.values():
            for record in part:
                records_by_room[record.key].append(record)
        busy = {}  # room -> the writer still writing its part of the batch before
        if self._writing:
            before = self._writing[-1]
            busy = {key: writer for key, writer in before.rooms.items() if not before.writes[writer].done()}
        parts = [[] for _ in self._writers]
        rooms = {}
        for key, room in sorted(records_by_room.items(), key=lambda item: (item[0] not in busy, -len(item[1]))):
            writer = busy[key] if key in busy else min(range(len(parts)), key=lambda n: len(parts[n]))
            parts[writer].extend(room)
            rooms[key] = writer
        offsets = {tp: OffsetAndMetadata(part[-1].offset + 1, "", part[-1].leader_epoch)
                   for tp, part in polled.items() if part}
        writes = {n: self._writers[n].submit(self._apply, part, n) for n, part in enumerate(parts) if part}
        return _Batch([record for part in polled.values() for record in part], offsets, writes, rooms)

    def _tidy_search_index(self) -> None:
        """After a stored batch: merge the search index's new entries beside the writers (unless the
        last merge is still running: the next one takes what arrives meanwhile)."""
        if self._tidy_refused or (self._tidying is not None and not self._tidying.done()):
            return
        self._tidying = self._tidier.submit(self._search_index_tidy)

    def _search_index_tidy(self) -> None:
        try:
            storage.search_index_tidy()
        except ProgrammingError as exc:
            # Only the worker's database role may (storage.search_index_tidy): inserts keep merging it.
            self._tidy_refused = True
            logger.warning("search index left to inserts to merge: %s", str(exc).strip())
        except DatabaseError as exc:
            connection.close()
            logger.warning("search index merge failed (%s); tried again after the next batch", exc.__class__.__name__)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + amount)

    def _apply(self, batch, writer: int) -> None:
        """Decode and write a part of a batch (retrying with backoff while Postgres fails). Runs in
        that writer's thread; the main thread commits the offsets after every part is written."""
        from chat.services.persistence import messages_persist

        good = []
        for record in batch:
            try:
                good.append((record, records.decode(record.value)))
            except records.RecordError as exc:
                self._dead_letter(record, str(exc))
        delay = 0.5
        while good:
            try:
                if time.monotonic() - self._last_write[writer] > KEEP_CONNECTION:
                    # Django's per-request rule (CONN_MAX_AGE, unusable connections), applied when a
                    # burst begins: within one, batches share the connection instead of paying a
                    # new one (and its authentication) each. A failed write closes it below.
                    close_old_connections()
                self._count("inserted", messages_persist([decoded for _, decoded in good]))
                self._last_write[writer] = time.monotonic()
                break
            except (IntegrityError, DataError, ValueError):
                # A record the schema refuses (say, of a room that no longer exists, or text the
                # driver cannot send) must not block the partition: apply one by one and
                # dead-letter the ones refused.
                good = self._apply_one_by_one(good)
            except DatabaseError as exc:
                self._count("retries")
                metrics.WORKER_RETRIES.inc()
                connection.close()
                if self.stopping and delay > 2:
                    raise SystemExit("stopping with an uncommitted batch; it is replayed on the next start") from exc
                logger.warning("database write failed (%s); retrying in %.1f s", exc.__class__.__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _apply_one_by_one(self, pairs):
        """Store each record alone; dead-letter those the database refuses. Returns none left to do."""
        from chat.services.persistence import messages_persist

        for record, decoded in pairs:
            try:
                self._count("inserted", messages_persist([decoded]))
            except (IntegrityError, DataError, ValueError) as exc:
                self._dead_letter(record, f"refused by the database: {exc}".strip()[:500])
        return []

    def _dead_letter(self, record, reason: str) -> None:
        self._dead_letters.send(record, reason, stopping=lambda: self.stopping)
        self._count("dead")

    def _progress(self) -> None:
        try:
            lag = self._lag.measure(self._consumer)
        except Exception:  # noqa: BLE001 - progress output must not stop the worker
            lag = -1
        self._say(self.stats.line(lag))

    def _say(self, line: str) -> None:
        if self.out is not None:
            self.out.write(line)
            self.out.flush()
        logger.info(line)
