"""A worker killed with kill -9 under load: its partitions are being stored again within 15 s,
whether another worker takes them over (the group's session timeout, WORKER_SESSION_TIMEOUT_MS) or a
supervisor restarts it in place with the same --instance-id (static membership: no rebalance, the
partitions come straight back). Both times are measured and printed; nothing is stored twice."""

import time
from datetime import datetime

import pytest
from kafka import KafkaConsumer, TopicPartition

from chat.bus.backlog import room_partition
from chat.bus.topics import ensure_topics
from chat.models import Message
from tests.conftest import make_room, make_user
from tests.integration.test_worker import BROKERS, SteadyStream, run_worker
from tests.support import unique, unique_topic, wait_until

pytestmark = pytest.mark.faults

PARTITIONS = 4
LIMIT = 15.0  # seconds until a dead worker's partitions are being stored again


def assigned(log: str) -> set[int]:
    """The partitions a worker holds, from the last assignment its log names."""
    line = log.rsplit("partitions assigned: ", 1)[1].split("\n", 1)[0].strip()
    return set() if line == "none" else {int(p) for p in line.split(",")}


def logged_at(log: str, text: str) -> float:
    """The time (epoch seconds) of the first log line holding `text`."""
    line = next(line for line in log.splitlines() if text in line and line[:4].isdigit())
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def holding(log: str) -> bool:
    return "partitions assigned: " in log and bool(assigned(log))


class Committed:
    """The group's committed offsets: a partition's moves only once a worker stored its records."""

    def __init__(self, group: str, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=group, enable_auto_commit=False)

    def __call__(self, partitions) -> dict[int, int]:
        return {p: self.consumer.committed(TopicPartition(self.topic, p), timeout_ms=5_000) or 0 for p in partitions}

    def close(self) -> None:
        self.consumer.close()


def seconds_until_stored_again(committed: Committed, partitions: set[int], since: float) -> float:
    """From `since` until every one of `partitions` committed past where it stood when asked."""
    before = committed(partitions)
    moved: dict[int, float] = {}
    deadline = since + 60
    while len(moved) < len(partitions):
        assert time.monotonic() < deadline, f"partitions {sorted(partitions - set(moved))} not stored again in 60 s"
        now = committed(set(partitions) - set(moved))
        moved.update({p: time.monotonic() for p, offset in now.items() if offset > before[p]})
        time.sleep(0.05)
    return max(moved.values()) - since


@pytest.fixture
def load():
    """A topic of PARTITIONS partitions, rooms on every one of them, and a stream of records to
    them (started by the test)."""
    topic = unique_topic("recovery")
    ensure_topics(topic=topic, partitions=PARTITIONS)
    author = make_user("author")
    rooms, covered = [], set()
    while covered != set(range(PARTITIONS)) or len(rooms) < 2 * PARTITIONS:
        rooms.append(make_room(author))
        covered.add(room_partition(rooms[-1].id, list(range(PARTITIONS))))
    stream = SteadyStream(topic, rooms, author)
    yield topic, stream
    stream.stopping.set()
    if stream.ident is not None:
        stream.join(60)


def stored_exactly_once(stream: SteadyStream) -> None:
    """Stop the stream; every record it sent gets stored, none twice."""
    stream.stopping.set()
    stream.join(60)
    wait_until(lambda: Message.objects.filter(room__in=stream.rooms).count() >= len(stream.sent), 90,
               message="every record stored")
    assert Message.objects.filter(room__in=stream.rooms).count() == len(stream.sent)


def start_pair(topic: str, group: str, *options_a: str):
    first = run_worker(topic, group, unique("wrec-a"), 300, *options_a)
    second = run_worker(topic, group, unique("wrec-b"), 300, "--instance-id", unique("wrec-b"))
    wait_until(lambda: holding(first.log()) and holding(second.log()), 60, message="both workers holding partitions")
    return first, second


def test_another_worker_stores_a_killed_workers_partitions_within_15_s(load, capsys):
    topic, stream = load
    group = unique("group")
    killed, other = start_pair(topic, group)
    committed = Committed(group, topic)
    try:
        stream.start()
        wait_until(lambda: all(committed(range(PARTITIONS)).values()), 30, message="every partition stored once")
        held = assigned(killed.log())
        killed.kill()
        took = seconds_until_stored_again(committed, held, time.monotonic())
        with capsys.disabled():
            print(f"\nworker kill -9 under load: the other worker stored its partitions {sorted(held)} "
                  f"again after {took:.1f} s")
        assert took < LIMIT
        assert assigned(other.log()) == set(range(PARTITIONS))
        stored_exactly_once(stream)
    finally:
        committed.close()
        assert other.stop() == 0


def test_a_worker_restarted_with_its_instance_id_gets_its_partitions_back_at_once(load, capsys):
    topic, stream = load
    group, instance = unique("group"), unique("wrec-static")
    killed, other = start_pair(topic, group, "--instance-id", instance)
    committed = Committed(group, topic)
    restarted = None
    try:
        stream.start()
        wait_until(lambda: all(committed(range(PARTITIONS)).values()), 30, message="every partition stored once")
        held, other_log = assigned(killed.log()), len(other.log())
        killed.kill()
        since, killed_at = time.monotonic(), time.time()
        restarted = run_worker(topic, group, unique("wrec-a2"), 300, "--instance-id", instance)
        took = seconds_until_stored_again(committed, held, since)
        wait_until(lambda: "chat.bus.worker partitions assigned: " in restarted.log(), 30,
                   message="the restarted worker's assignment logged")
        joined = logged_at(restarted.log(), "partitions assigned: ") - killed_at
        with capsys.disabled():
            print(f"\nworker kill -9 under load, restarted with its --instance-id: its partitions {sorted(held)} "
                  f"stored again after {took:.1f} s (back in the group with them after {joined:.1f} s, "
                  "mostly the process's start)")
        assert took < LIMIT
        # Static membership: the group did not rebalance, the other worker kept what it had.
        assert "partitions revoked" not in other.log()[other_log:], other.log()[other_log:]
        assert assigned(restarted.log()) == held
        stored_exactly_once(stream)
    finally:
        committed.close()
        for worker in (restarted, other):
            if worker is not None:
                assert worker.stop() == 0
