"""consume_messages against the real broker and Postgres: idempotent replay, partitions shared by
two workers, dead letters, and SIGTERM finishing the batch."""

import json
import signal
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from chat import storage
from chat.bus import records
from chat.bus.topics import dead_letter_topic, ensure_topics
from chat.models import Message
from tests.conftest import SERVICES, child_env, make_room, make_user
from tests.support import PYTHON, Process, unique, unique_topic, wait_until

BROKERS = SERVICES["KAFKA_BOOTSTRAP_SERVERS"]


def created_record(room, author, seq: int) -> dict:
    message = {
        "id": str(uuid.uuid4()), "room": room.slug, "seq": seq,
        "author": {"id": author.id, "username": author.username}, "body": f"{room.slug} {seq}",
        "created_at": timezone.now().isoformat(), "edited_at": None, "client_id": None,
    }
    return records.message_record("message.created", message, room_id=room.id)


def created_records(rooms, author, per_room: int) -> list[dict]:
    return [created_record(room, author, seq) for room in rooms for seq in range(1, per_room + 1)]


def produce(topic: str, values: list[tuple[bytes, bytes]], linger_ms: int = 0) -> None:
    """`values` to `topic`; with `linger_ms`, a few records of one partition go in one batch, which
    a consumer then reads in one fetch."""
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks="all", linger_ms=linger_ms)
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush(30)
    producer.close()


def committed_offsets(group: str, topic: str) -> int:
    """The group's committed offsets over the topic's partitions: the records it has stored for good."""
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=group, enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in consumer.partitions_for_topic(topic))
    finally:
        consumer.close()


def run_worker(topic: str, group: str, name: str, idle: float = 4, *options: str) -> Process:
    return Process(name, [PYTHON, "manage.py", "consume_messages", "--topic", topic, "--group", group,
                          "--idle-exit", str(idle), "--progress-every", "1", *options], child_env()).start()


def test_two_workers_share_partitions_and_store_everything_once():
    topic = unique_topic("two-workers")
    ensure_topics(topic=topic, partitions=4)
    author = make_user("author")
    rooms = [make_room(author) for _ in range(8)]
    batch = created_records(rooms, author, 250)
    group = unique("group")
    first, second = run_worker(topic, group, unique("w1"), idle=8), run_worker(topic, group, unique("w2"), idle=8)

    def both_assigned() -> bool:
        logs = [first.log(), second.log()]
        return all("partitions assigned: " in log and not log.rstrip().endswith("assigned: none") for log in logs)

    wait_until(both_assigned, 60, message="both workers holding partitions")
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    assert first.proc.wait(90) == 0 and second.proc.wait(90) == 0, first.log() + second.log()
    assert Message.objects.filter(room__in=rooms).count() == len(batch)
    def stored(log: str) -> int:
        return int(log.rsplit("stopped after ", 1)[1].split()[0])

    # Both members got partitions (8 room keys over 4 partitions), and together read each record once
    # or, across a rebalance, more than once: never fewer.
    assert stored(first.log()) > 0 and stored(second.log()) > 0
    assert stored(first.log()) + stored(second.log()) >= len(batch)

    # Replaying the whole topic with a new group id adds no row.
    again = run_worker(topic, unique("replay"), unique("w3"), idle=4)
    assert again.proc.wait(90) == 0
    assert "(0 new" in again.log()
    assert Message.objects.filter(room__in=rooms).count() == len(batch)


def holds_partitions_since_revoke(log: str, revokes: int = 1) -> bool:
    """The worker was revoked `revokes` times and was given partitions after the last time."""
    last = log.rfind("partitions assigned: ")
    return (log.count("partitions revoked: ") >= revokes and last > log.rfind("partitions revoked: ")
            and not log[last:].startswith("partitions assigned: none"))


class SteadyStream(threading.Thread):
    """Sends message records to a topic, a few every millisecond or so, until stopped."""

    def __init__(self, topic: str, rooms, author) -> None:
        super().__init__(daemon=True)
        self.topic, self.rooms, self.author = topic, rooms, author
        self.sent: list[dict] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=BROKERS, acks="all", linger_ms=1)
        seq = 0
        while not self.stopping.is_set():
            seq += 1
            for record in (created_record(room, self.author, seq) for room in self.rooms):
                producer.send(self.topic, key=records.record_key(record), value=records.encode(record))
                self.sent.append(record)
            time.sleep(0.002)
        producer.flush(30)
        producer.close()


def test_workers_joining_and_leaving_under_steady_traffic_store_everything_once():
    """Rebalances while batches are being written (a second worker joins, then leaves, mid-stream):
    the first worker commits what it wrote from its revoke hook and goes on; nothing is missed or
    doubled, and every offset ends committed."""
    topic = unique_topic("rebalance")
    ensure_topics(topic=topic, partitions=4)
    author = make_user("author")
    rooms = [make_room(author) for _ in range(8)]
    group = unique("group")
    first = run_worker(topic, group, unique("wr1"), idle=6)
    wait_until(lambda: "partitions assigned: 0,1,2,3" in first.log(), 60, message="the first worker assigned")
    stream = SteadyStream(topic, rooms, author)
    stream.start()
    second = None
    try:
        wait_until(lambda: Message.objects.filter(room__in=rooms).count() >= 200, 30, message="traffic stored")
        second = Process(unique("wr2"), [PYTHON, "manage.py", "consume_messages", "--topic", topic, "--group", group,
                                         "--progress-every", "1"], child_env()).start()
        wait_until(lambda: holds_partitions_since_revoke(first.log())
                   and holds_partitions_since_revoke(second.log(), revokes=0), 60, message="both holding partitions")
        stored = Message.objects.filter(room__in=rooms).count()
        wait_until(lambda: Message.objects.filter(room__in=rooms).count() >= stored + 200, 30,
                   message="traffic stored by the two")
        second.signal(signal.SIGTERM)
        assert second.proc.wait(30) == 0, second.log()
        wait_until(lambda: holds_partitions_since_revoke(first.log(), 2), 60, message="the first worker alone again")
    finally:
        stream.stopping.set()
        stream.join(30)
        if second is not None:
            second.stop()
    assert first.proc.wait(90) == 0, first.log()
    assert "failed on_partitions_revoked" not in first.log()
    assert Message.objects.filter(room__in=rooms).count() == len(stream.sent)
    # Every record's offset is committed: a worker of the same group finds nothing left.
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=group, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(parts)
    committed = {tp: consumer.committed(tp) or 0 for tp in parts}
    consumer.close()
    assert committed == ends


def test_undecodable_records_go_to_the_dead_letter_topic_and_consumption_goes_on():
    topic = unique_topic("dead")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    good = created_records([room], author, 2)
    refused = {**created_records([room], author, 1)[0], "client_id": "nul\x00inside"}  # Postgres cannot store it
    produce(topic, [
        (records.record_key(refused), records.encode(refused)),
        (b"1", b"{not json"),
        (records.record_key(good[0]), records.encode(good[0])),
        (b"1", json.dumps({"event": "message.created", "id": "nope"}).encode()),
        (records.record_key(good[1]), records.encode(good[1])),
    ])
    worker = run_worker(topic, unique("group"), unique("wdead"))
    assert worker.proc.wait(60) == 0, worker.log()
    assert Message.objects.filter(room=room).count() == 2
    consumer = KafkaConsumer(dead_letter_topic(topic), bootstrap_servers=BROKERS, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    dead = list(consumer)
    consumer.close()
    reasons = {d.value: dict(d.headers)["reason"].decode() for d in dead}
    assert len(dead) == 3
    assert "not JSON" in reasons[b"{not json"]
    assert "refused by the database" in reasons[records.encode(refused)] and "NUL" in reasons[records.encode(refused)]
    assert [reason for reason in reasons.values() if "malformed" in reason]


def test_sigterm_commits_the_batch_and_exits_zero():
    topic = unique_topic("sigterm")
    ensure_topics(topic=topic, partitions=2)
    author = make_user("author")
    room = make_room(author)
    produce(topic, [(records.record_key(r), records.encode(r)) for r in created_records([room], author, 500)])
    group = unique("group")
    worker = Process(unique("wterm"), [PYTHON, "manage.py", "consume_messages", "--topic", topic, "--group", group],
                     child_env()).start()
    wait_until(lambda: Message.objects.filter(room=room).count() == 500, 60, message="the batch stored")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    # Its offsets were committed: the same group finds nothing left to read.
    assert committed_offsets(group, topic) == 500


def test_a_second_worker_with_the_same_instance_id_takes_over_and_the_first_stops_with_an_error():
    topic = unique_topic("fenced")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    group, instance = unique("group"), unique("instance")
    first = run_worker(topic, group, unique("wfence1"), 120, "--instance-id", instance)
    wait_until(lambda: "partitions assigned: 0" in first.log(), 60, message="the first worker assigned")
    second = run_worker(topic, group, unique("wfence2"), 120, "--instance-id", instance)
    wait_until(lambda: "partitions assigned: 0" in second.log(), 60, message="the second worker assigned")
    produce(topic, [(records.record_key(r), records.encode(r)) for r in created_records([room], author, 20)])
    wait_until(lambda: Message.objects.filter(room=room).count() == 20, 60, message="the records stored")
    # The first learns from the group that its id is taken (at its next heartbeat or commit) and exits.
    assert first.proc.wait(30) == 1, first.log()
    assert f"joined with instance id {instance}: each worker needs an id of its own" in first.log()
    assert second.alive() and second.stop() == 0


def test_one_batch_ignores_duplicates_by_id_and_client_id_keeps_a_second_message_with_one_seq_and_applies_changes():
    topic = unique_topic("batch-semantics")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    m1, m2, m3, m4, m5, m6 = created_records([room], author, 6)
    m6["client_id"] = "client-6"
    later = timezone.now().isoformat()
    twin = {**m1, "id": str(uuid.uuid4()), "body": "another id, same (room, seq)"}
    batch = [
        m1,
        twin,  # another id, same (room, seq): kept, under a new seq
        m1,  # the same record again: ignored
        m2,
        {**m2, "body": "m2 edited", "edited_at": later, "event": "message.edited", "rev": 2},
        m3,
        {**m3, "event": "message.deleted", "by": "author", "rev": 2},
        m4,
        {**m4, "event": "message.deleted", "by": "moderator", "rev": 2},
        {**m4, "event": "message.restored", "rev": 3},
        # The edit overtook the create: the edited state is stored first and the create changes nothing.
        {**m5, "body": "m5 edited", "edited_at": later, "event": "message.edited", "rev": 2},
        m5,
        m6,
        {**m6, "id": str(uuid.uuid4()), "seq": 99, "body": "same client_id again"},  # ignored
        # Reactions with the message's full state; the older rev, late, changes nothing.
        {**m1, "event": "reaction.changed", "rev": 3, "reactions": [{"emoji": "👍", "count": 2, "users": ["a", "b"]}]},
        {**m1, "event": "reaction.changed", "rev": 2, "reactions": [{"emoji": "👍", "count": 1, "users": ["a"]}]},
        {**m2, "event": "message.edited", "body": "no rev", "edited_at": later, "rev": None},  # dead: no rev
    ]
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    worker = run_worker(topic, unique("group"), unique("wbatch"))
    assert worker.proc.wait(60) == 0, worker.log()
    assert f"stopped after {len(batch)} records (7 new, 1 dead)" in worker.log()
    assert "'rev' must be a positive integer" in worker.log()
    stored = {str(m.id): m for m in Message.objects.filter(room=room)}
    assert set(stored) == {m["id"] for m in (m1, m2, m3, m4, m5, m6, twin)}
    # Above every seq of the room in the batch, the re-send's 99 included.
    assert sorted(m.seq for m in stored.values()) == [1, 2, 3, 4, 5, 6, 100]
    assert stored[twin["id"]].seq == 100
    assert stored[m1["id"]].body == m1["body"]
    assert (stored[m2["id"]].body, stored[m2["id"]].edited_at.isoformat()) == ("m2 edited", later)
    assert (stored[m3["id"]].deleted, stored[m3["id"]].hidden) == (True, False)
    assert (stored[m4["id"]].deleted, stored[m4["id"]].hidden) == (False, False)
    assert stored[m5["id"]].body == "m5 edited"
    assert stored[m6["id"]].client_id == "client-6"
    assert (stored[m1["id"]].rev, stored[m1["id"]].reactions) == (3, [{"emoji": "👍", "count": 2, "users": ["a", "b"]}])
    assert (stored[m4["id"]].rev, stored[m2["id"]].rev) == (3, 2)


def test_bodies_and_client_ids_are_stored_exactly_as_sent():
    topic = unique_topic("exact")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    texts = ['quote " backslash \\ \\" {braces}, commas', "NULL", "", "  spaced  ", "tab\tnew\nline\r",
             "emoji 😀 ünïcødé 中文", "percent %s %(x)s", "'single' ''quotes''", "\\", '"', "{}", "a,b"]
    batch = created_records([room], author, len(texts))
    for record, text in zip(batch, texts, strict=True):
        record["body"] = text
        record["client_id"] = text[:64] or None
    batch[0]["created_at"] = "2026-01-02T03:04:05.678901+05:30"
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    worker = run_worker(topic, unique("group"), unique("wexact"))
    assert worker.proc.wait(60) == 0, worker.log()
    assert f"({len(texts)} new, 0 dead)" in worker.log()
    stored = {m.seq: m for m in Message.objects.filter(room=room)}
    assert [stored[r["seq"]].body for r in batch] == texts
    assert [stored[r["seq"]].client_id for r in batch] == [r["client_id"] for r in batch]
    first = stored[1].created_at
    assert first.isoformat() == "2026-01-01T21:34:05.678901+00:00"


@pytest.mark.parametrize("max_records", [5000, 7], ids=["one-batch", "many-batches"])
def test_two_writers_apply_each_rooms_changes_in_order_across_partitions(max_records):
    """The default two writers share a batch by room: every room's creates, edits, deletes and
    restores, interleaved with other rooms' over several partitions, still apply in order; in
    batches of 7, a room's records span many batches, each written while the next is queued (the
    rule that keeps a room with its writer meanwhile: tests/unit/test_worker_split.py)."""
    topic = unique_topic("writers")
    ensure_topics(topic=topic, partitions=4)
    author = make_user("author")
    rooms = [make_room(author) for _ in range(12)]
    later, latest = timezone.now().isoformat(), (timezone.now() + timedelta(seconds=1)).isoformat()
    per_room = []
    for room in rooms:
        m = created_records([room], author, 7)
        per_room.append([
            *m[:4],
            {**m[1], "body": "edited", "edited_at": later, "event": "message.edited", "rev": 2},
            {**m[2], "event": "message.deleted", "by": "author", "rev": 2},
            {**m[3], "event": "message.deleted", "by": "moderator", "rev": 2},
            {**m[3], "event": "message.restored", "rev": 3},  # after the hiding: visible again
            # Before its create:
            {**m[4], "body": "edited first", "edited_at": later, "event": "message.edited", "rev": 2},
            m[4],
            m[5],
            {**m[5], "event": "message.restored", "rev": 3},  # a later rev than the hiding's: visible in the end
            {**m[5], "event": "message.deleted", "by": "moderator", "rev": 2},
            m[6],
            {**m[6], "body": "last edit", "edited_at": latest, "event": "message.edited", "rev": 3},
            {**m[6], "body": "older edit", "edited_at": later, "event": "message.edited", "rev": 2},  # older: ignored
        ])
    # As producers would send them: the rooms' records interleaved.
    batch = [record for step in zip(*per_room, strict=True) for record in step]
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    worker = run_worker(topic, unique("group"), unique("wwriters"), 4, "--max-records", str(max_records))
    assert worker.proc.wait(60) == 0, worker.log()
    assert f"stopped after {len(batch)} records ({7 * len(rooms)} new, 0 dead)" in worker.log()
    for room in rooms:
        stored = {m.seq: m for m in Message.objects.filter(room=room)}
        assert sorted(stored) == [1, 2, 3, 4, 5, 6, 7]
        assert stored[2].body == "edited" and stored[2].edited_at.isoformat() == later
        assert (stored[3].deleted, stored[3].hidden) == (True, False)
        assert (stored[4].deleted, stored[4].hidden) == (False, False)
        assert stored[5].body == "edited first"
        assert (stored[6].deleted, stored[6].hidden) == (False, False)
        assert stored[7].body == "last edit"
        assert stored[1].body == f"{room.slug} 1" and not (stored[1].deleted or stored[1].hidden)


def test_the_worker_merges_the_search_index_entries_of_what_it_stored():
    """Searches and the next inserts find no pending list to go through: the worker merged it."""
    topic = unique_topic("search-tidy")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    storage.search_index_tidy()  # whatever earlier tests left
    batch = created_records([room], author, 300)
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    worker = run_worker(topic, unique("group"), unique("wtidy"))
    assert worker.proc.wait(60) == 0, worker.log()
    assert Message.objects.filter(room=room).count() == 300
    assert storage.search_index_tidy() == 0  # the pages of entries that were still pending
