"""Reconnect without gaps, idempotent send, sequences that survive Redis losing its data, send errors."""


import uuid

import pytest
import redis

from chat.bus.topics import ensure_topics
from chat.models import Message
from tests.conftest import SERVICES, child_env
from tests.support import PYTHON, Process, WebServer, chat_socket, unique, unique_topic, wait_until

pytestmark = pytest.mark.usefixtures("worker")


async def send_and_ack(sock, body: str, client_id: str | None = None) -> dict:
    await sock.send({"type": "message.send", "body": body, "client_id": client_id or unique("c")})
    return await sock.recv_type("ack", "error")


async def test_reconnect_with_after_gets_every_missed_message_once_then_live(web_a, web_b, alice, bob, room):
    async with chat_socket(web_b, room.slug, bob.cookie) as b:
        first = await send_and_ack(b, "before the gap")
    last_seen = first["seq"]
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        missed = [await send_and_ack(a, f"missed {n}") for n in range(50)]
    async with chat_socket(web_b, room.slug, bob.cookie, after=last_seen) as b, \
            chat_socket(web_a, room.slug, alice.cookie) as a:
        replayed = await b.messages(50)
        resumed = await b.recv_type("resumed")
        live = await send_and_ack(a, "live after resume")
        after_resume = await b.recv_type("message")
    assert [m["seq"] for m in replayed] == [ack["seq"] for ack in missed]
    assert [m["body"] for m in replayed] == [f"missed {n}" for n in range(50)]
    assert resumed["last_seq"] == missed[-1]["seq"]
    assert after_resume["seq"] == live["seq"] > missed[-1]["seq"]


async def test_resume_frame_replays_including_unpersisted_messages(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        acks = [await send_and_ack(a, f"m{n}") for n in range(5)]
        await b.messages(5)
        await b.send({"type": "resume", "after": acks[1]["seq"]})
        again = await b.messages(3)
        resumed = await b.recv_type("resumed")
    assert [m["seq"] for m in again] == [ack["seq"] for ack in acks[2:]]
    assert resumed["last_seq"] == acks[-1]["seq"]


async def test_duplicate_client_id_creates_no_second_message_even_across_instances(web_a, web_b, alice, room):
    cid = unique("dup")
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        first = await send_and_ack(a, "only once", cid)
    async with chat_socket(web_b, room.slug, alice.cookie) as again:
        retry = await send_and_ack(again, "only once", cid)
        other = await send_and_ack(again, "a different one")
    assert first["type"] == retry["type"] == "ack"
    assert (retry["id"], retry["seq"]) == (first["id"], first["seq"])
    assert other["seq"] > first["seq"]
    # Ids are time-ordered (UUIDv7), so stored rows land at the end of the primary-key index.
    assert uuid.UUID(first["id"]).version == uuid.UUID(other["id"]).version == 7
    assert other["id"] > first["id"]
    wait_until(lambda: Message.objects.filter(id=other["id"]).exists(), 15, message="persisted")
    assert Message.objects.filter(room=room, client_id=cid).count() == 1


@pytest.mark.faults  # FLUSHALL empties the Redis every test shares: it runs with the faults, alone
async def test_seq_is_never_reused_after_redis_loses_its_data(web_a, web_b, alice, room):
    client = redis.Redis.from_url(SERVICES["REDIS_URL"])
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        before = [await send_and_ack(a, f"before {n}") for n in range(3)]
    client.flushall()
    # The pub/sub connections of both instances were not touched by FLUSHALL: live delivery goes on.
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        after = [await send_and_ack(a, f"after {n}") for n in range(3)]
    seqs = [ack["seq"] for ack in before + after]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    wait_until(lambda: Message.objects.filter(room=room).count() == 6, 15, message="all six persisted")
    assert sorted(Message.objects.filter(room=room).values_list("seq", flat=True)) == seqs


async def test_send_path_errors_keep_the_connection_open(web_a, alice, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        cases = [
            ("{not json", "invalid_json"),
            ('{"type": "message.send", "body": 1, "client_id": "x"}', "invalid_frame"),
            ('{"type": "no.such.type"}', "invalid_frame"),
            ('{"type": "message.send", "body": "   ", "client_id": "x"}', "empty_body"),
            ('{"type": "message.send", "body": "' + "x" * 4001 + '", "client_id": "x"}', "too_long"),
            ('{"type": "message.edit", "id": "00000000-0000-0000-0000-000000000000", "body": "x"}', "not_found"),
        ]
        for text, code in cases:
            await a.send(text)
            error = await a.recv_type("error")
            assert error["code"] == code and error["detail"], (text[:40], error)
        ok = await send_and_ack(a, "still works")
        assert ok["type"] == "ack"


async def test_frames_too_big_or_binary_close_the_socket(web_a, alice, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        await a.send('{"type":"message.send","client_id":"x","body":"' + "x" * 70_000 + '"}')
        assert await a.close_code() == 1009
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        await a.ws.send(b"\x00\x01binary")
        assert await a.close_code() == 1003


async def test_only_the_author_may_edit_or_delete(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        ack = await send_and_ack(a, "mine")
        await b.send({"type": "message.edit", "id": ack["id"], "body": "hijacked"})
        assert (await b.recv_type("error"))["code"] == "forbidden"
        await b.send({"type": "message.delete", "id": ack["id"]})
        assert (await b.recv_type("error"))["code"] == "forbidden"
        await a.send({"type": "message.edit", "id": ack["id"], "body": "mine, edited"})
        edited = await b.recv_type("message.edited")
        assert (edited["id"], edited["seq"], edited["body"]) == (ack["id"], ack["seq"], "mine, edited")
        assert edited["edited_at"]
        await a.send({"type": "message.delete", "id": ack["id"]})
        deleted = await b.recv_type("message.deleted")
        assert (deleted["id"], deleted["seq"]) == (ack["id"], ack["seq"])
    wait_until(lambda: Message.objects.filter(id=ack["id"], deleted=True, body="mine, edited").exists(), 15,
               message="edit and delete applied in Postgres")
    async with chat_socket(web_b, room.slug, bob.cookie, after=0) as b:
        resumed = await b.recv_type("resumed")
        assert not [f for f in b.frames if f["type"] == "message"]
        assert resumed["last_seq"] == 0


async def test_typing_reaches_the_others_but_not_the_typist(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        await a.send({"type": "typing", "active": True})
        typing = await b.recv_type("typing")
        assert typing == {"type": "typing", "user": alice.username, "active": True}
        await a.send({"type": "ping"})
        await a.recv_type("pong")
        assert not [f for f in a.frames if f["type"] == "typing"]


async def test_rate_limit_is_per_user_across_instances(alice, bob, room):
    from tests.conftest import child_env
    from tests.support import WebServer

    env = child_env(CHAT_RATE_LIMIT="5/60s", CHAT_REDIS_PREFIX=unique("rate"))
    one, two = WebServer(unique("rate-a"), env).start(), WebServer(unique("rate-b"), env).start()
    try:
        async with chat_socket(one, room.slug, alice.cookie) as a1, chat_socket(two, room.slug, alice.cookie) as a2:
            results = [await send_and_ack(a1 if n % 2 else a2, f"n{n}") for n in range(6)]
            async with chat_socket(two, room.slug, bob.cookie) as b:
                bobs = await send_and_ack(b, "bob is not limited")
        assert [r["type"] for r in results] == ["ack"] * 5 + ["error"]
        assert results[-1]["code"] == "rate_limited" and results[-1]["retry_after"] > 0
        assert bobs["type"] == "ack"
    finally:
        one.stop()
        two.stop()


async def test_resume_past_the_recent_buffer_waits_for_the_worker_to_store_what_kafka_holds(alice, bob, room):
    """A client away for longer than the recent buffer reaches back into Postgres; acked messages
    still only in Kafka (the worker behind) must come too, not leave a hole."""
    topic, group = unique_topic("behind"), unique("behind")
    ensure_topics(topic=topic, partitions=4)
    env = child_env(KAFKA_TOPIC=topic, KAFKA_CONSUMER_GROUP=group, CHAT_RECENT_BUFFER="5",
                    CHAT_REPLAY_CATCHUP_SECONDS="60")
    web = WebServer(unique("web-behind"), env).start()
    worker = None
    try:
        async with chat_socket(web, room.slug, alice.cookie) as a:
            acks = [await send_and_ack(a, f"m{i}") for i in range(30)]
        assert all(ack["type"] == "ack" for ack in acks), acks
        assert not Message.objects.filter(room=room).exists(), "no worker reads this topic yet"
        async with chat_socket(web, room.slug, bob.cookie, after=0) as b:
            worker = Process(unique("w-behind"), [PYTHON, "manage.py", "consume_messages", "--progress-every", "1"],
                             env).start()
            replayed = await b.messages(30, timeout=60)
            assert [m["seq"] for m in replayed] == [ack["seq"] for ack in acks]
            assert [m["body"] for m in replayed] == [f"m{i}" for i in range(30)]
            assert (await b.recv_type("resumed"))["last_seq"] == acks[-1]["seq"]
    finally:
        if worker is not None:
            worker.stop()
        web.stop()
