"""With Kafka stopped, live chat keeps flowing and the event loop stays responsive; acks come back
when Kafka does, and what the producer gave up on is reported as not_persisted and can be re-sent.
A worker that finds Kafka gone after a write (to commit the batch's offsets, or to dead-letter a
record the database refused) keeps running and does it once Kafka is back."""

import asyncio
import contextlib
import subprocess
import time

import psycopg2
import pytest
from django.conf import settings
from django.db import connection
from kafka import KafkaConsumer

from chat.bus import records
from chat.bus.topics import dead_letter_topic, ensure_topics
from chat.models import Message
from tests.conftest import make_room, make_user
from tests.integration.test_worker import BROKERS, committed_offsets, created_records, produce, run_worker
from tests.support import ROOT, chat_socket, unique, unique_topic, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("worker")]


WORKER_BACK_WITHIN = 20  # seconds from Kafka ready again to the worker's commit (its dead-letter retry waits up to 10)


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=180)


async def test_kafka_stopped_live_chat_flows_and_nothing_acked_is_lost(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        await a.send({"type": "message.send", "body": "warm up", "client_id": unique("c")})
        await a.recv_type("ack")
        await b.recv_type("message")
        await asyncio.to_thread(services, "down", "kafka")
        try:
            sent = []
            for n in range(5):
                cid = unique("c")
                sent.append(cid)
                await a.send({"type": "message.send", "body": f"while kafka is down {n}", "client_id": cid})
                live = await b.recv_type("message", timeout=5)
                assert live["client_id"] == cid
            # The loop still answers at once while produce calls wait on the missing broker (the
            # median of five pings: one can meet a busy shared core, a blocked loop delays them all).
            rounds = []
            for _ in range(5):
                started = time.monotonic()
                await a.send({"type": "ping"})
                await a.recv_type("pong", timeout=2)
                rounds.append(time.monotonic() - started)
            assert sorted(rounds)[2] < 1.0, rounds
            outcomes = {}
            while len(outcomes) < len(sent):
                frame = await a.recv_type("ack", "error", timeout=30)
                outcomes[frame["client_id"]] = frame
            assert {f["type"] for f in outcomes.values()} == {"error"}
            assert {f["code"] for f in outcomes.values()} == {"not_persisted"}
        finally:
            await asyncio.to_thread(services, "up", "kafka")
        # Re-sent with the same client_id once Kafka is back, as a client does until it gets its ack
        # (the producer may need a moment to reconnect): acked with the original id and seq.
        deadline = time.monotonic() + 60
        for cid in sent:
            while True:
                await a.send({"type": "message.send", "body": "re-sent", "client_id": cid})
                reply = await a.recv_type("ack", "error", timeout=30)
                assert reply["client_id"] == cid
                if reply["type"] == "ack":
                    break
                assert reply["code"] == "not_persisted" and time.monotonic() < deadline, reply
        acked = [f for f in a.frames if f["type"] == "ack"]
    wait_until(lambda: Message.objects.filter(room=room).count() == 6, 60, message="every acked message stored")
    stored = {m.client_id: m for m in Message.objects.filter(room=room)}
    for ack in acked:
        assert str(stored[ack["client_id"]].id) == ack["id"] and stored[ack["client_id"]].seq == ack["seq"]


def writes_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


@contextlib.contextmanager
def kafka_gone_after_the_next_write(topic: str, batch: list[dict]):
    """Produces `batch` and holds the worker's write of it with locks on the room and message tables
    (its first step locks the batch's rooms; inserting needs the message table), stops Kafka, then
    lets the write go: what follows the write finds no broker. Kafka is started again when the
    block ends."""
    db = settings.DATABASES["default"]
    blocker = psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                               port=db["PORT"])
    try:
        with blocker.cursor() as cursor:
            cursor.execute("LOCK TABLE chat_room IN EXCLUSIVE MODE")
            cursor.execute("LOCK TABLE chat_message IN SHARE MODE")
        # One Kafka batch, so the worker fetches and writes all of it at once (not its first record alone).
        produce(topic, [(records.record_key(r), records.encode(r)) for r in batch], linger_ms=1000)
        wait_until(lambda: writes_waiting_on_a_lock() >= 1, 30, message="the worker's write held by the lock")
        services("down", "kafka")
        try:
            blocker.rollback()
            yield
        finally:
            services("up", "kafka")
    finally:
        blocker.close()


def test_a_worker_whose_offset_commit_finds_kafka_gone_keeps_running_and_commits_once_it_is_back():
    topic = unique_topic("commit-down")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    batch = created_records([room], author, 50)
    group = unique("group")
    worker = run_worker(topic, group, unique("wcommit"), idle=120)
    wait_until(lambda: "partitions assigned: 0" in worker.log(), 60, message="worker assigned")
    with kafka_gone_after_the_next_write(topic, batch):  # the write goes through; the commit finds no broker
        wait_until(lambda: Message.objects.filter(room=room).count() == len(batch), 30, message="the batch stored")
        wait_until(lambda: "offset commit failed" in worker.log() or not worker.alive(), 30,
                   message="the failed commit logged")
        assert worker.alive(), f"the worker exited:\n{worker.log()[-3000:]}"
    # Back in seconds: kafka-python's default backoff (up to 30 s between tries) once left a worker
    # 20-40 s behind a Kafka that was back.
    wait_until(lambda: committed_offsets(group, topic) == len(batch), WORKER_BACK_WITHIN,
               message=f"the stored batch's offsets committed within {WORKER_BACK_WITHIN} s of Kafka's return")
    assert worker.alive(), worker.log()[-3000:]
    assert worker.stop() == 0
    assert Message.objects.filter(room=room).count() == len(batch)


def test_a_worker_that_must_dead_letter_while_kafka_is_gone_waits_for_it_and_goes_on():
    topic = unique_topic("dead-down")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    good = created_records([room], author, 1)[0]
    orphan = {**created_records([room], author, 2)[1], "room_id": 10**15}  # no such room: the database refuses it
    group = unique("group")
    worker = run_worker(topic, group, unique("wdeaddown"), idle=120)
    wait_until(lambda: "partitions assigned: 0" in worker.log(), 60, message="worker assigned")
    with kafka_gone_after_the_next_write(topic, [good, orphan]):  # the missing room fails the write
        # Dead-lettering finds no broker; a first attempt gives up within about 10 s (the producer's
        # bootstrap, metadata and send).
        wait_until(lambda: "could not dead-letter" in worker.log() or not worker.alive(), 60,
                   message="the failed dead-lettering logged")
        assert worker.alive(), f"the worker exited:\n{worker.log()[-3000:]}"
    wait_until(lambda: committed_offsets(group, topic) == 2, WORKER_BACK_WITHIN,
               message=f"both records' offsets committed within {WORKER_BACK_WITHIN} s of Kafka's return")
    consumer = KafkaConsumer(dead_letter_topic(topic), bootstrap_servers=BROKERS, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    dead = list(consumer)
    consumer.close()
    # Kafka out longer than the worker's group session: the group rebalances when it is back and the
    # batch, whose offsets could not be committed, is read again, so the orphan may be dead-lettered
    # once more, always under its one source (what a re-drive counts it by).
    assert dead and {d.value for d in dead} == {records.encode(orphan)}
    assert {dict(d.headers)["source"] for d in dead} == {f"{topic}:0:1".encode()}
    assert "refused by the database" in dict(dead[0].headers)["reason"].decode()
    assert list(Message.objects.filter(room=room).values_list("seq", flat=True)) == [good["seq"]]
    assert worker.stop() == 0
