"""consume_messages against the real broker and Postgres: idempotent replay, partitions shared by
two workers, dead letters, and SIGTERM finishing the batch."""

import json
import signal
import uuid

from django.utils import timezone
from kafka import KafkaConsumer, KafkaProducer

from chat.bus import records
from chat.bus.topics import dead_letter_topic, ensure_topics
from chat.models import Message
from tests.conftest import SERVICES, child_env, make_room, make_user
from tests.support import PYTHON, Process, unique, wait_until

BROKERS = SERVICES["KAFKA_BOOTSTRAP_SERVERS"]


def created_records(rooms, author, per_room: int) -> list[dict]:
    out = []
    for room in rooms:
        for seq in range(1, per_room + 1):
            message = {
                "id": str(uuid.uuid4()), "room": room.slug, "seq": seq,
                "author": {"id": author.id, "username": author.username}, "body": f"{room.slug} {seq}",
                "created_at": timezone.now().isoformat(), "edited_at": None, "client_id": None,
            }
            out.append(records.message_record("message.created", message, room_id=room.id))
    return out


def produce(topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks="all")
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush(30)
    producer.close()


def run_worker(topic: str, group: str, name: str, idle: float = 4) -> Process:
    return Process(name, [PYTHON, "manage.py", "consume_messages", "--topic", topic, "--group", group,
                          "--idle-exit", str(idle), "--progress-every", "1"], child_env()).start()


def test_two_workers_share_partitions_and_store_everything_once():
    topic = unique("chat.two-workers")
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


def test_undecodable_records_go_to_the_dead_letter_topic_and_consumption_goes_on():
    topic = unique("chat.dead")
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
    topic = unique("chat.sigterm")
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
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=group, enable_auto_commit=False)
    from kafka import TopicPartition

    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    committed = sum(consumer.committed(tp) or 0 for tp in parts)
    consumer.close()
    assert committed == 500
