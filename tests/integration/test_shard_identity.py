"""Redis state that is not this deployment's (another database's identity on the shard, as after a
Postgres restore) is not trusted: the room starts a new epoch above the clock, its sockets resume
(1012) and the identity is written back; `deployment_renew` gives the database a new identity."""

import asyncio
import time

import redis

from chat.models import Deployment, Message
from chat.services.rooms import deployment_identity, deployment_renew
from chat.shards import hash_tag, partition_of
from tests.conftest import SERVICES, TEST_ENV
from tests.support import chat_socket, unique, wait_until

IDENTITY = f"{TEST_ENV['CHAT_REDIS_PREFIX']}:shard:identity"


async def send_and_ack(sock, body: str, client_id: str | None = None) -> dict:
    await sock.send({"type": "message.send", "body": body, "client_id": client_id or unique("c")})
    return await sock.recv_type("ack")


async def test_another_deployments_state_starts_a_new_epoch_and_listeners_resume(web_a, web_b, worker, alice, bob,
                                                                                  room):
    client = redis.Redis.from_url(SERVICES["REDIS_URL"], decode_responses=True)
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        first = [await send_and_ack(a, f"m{n}") for n in range(3)]
        assert [m["seq"] for m in await b.messages(3)] == [ack["seq"] for ack in first] == [1, 2, 3]
        client.hset(IDENTITY, "deployment", "another-database")
        client_id = unique("c")
        await a.send({"type": "message.send", "body": "after", "client_id": client_id})
        # A new epoch is a gap: every socket in the room resumes, the sender's too (it re-sends).
        assert await a.close_code() == await b.close_code() == 1012
    assert client.hget(IDENTITY, "deployment") == deployment_identity()
    async with chat_socket(web_a, room.slug, alice.cookie, after=3) as again:
        after = await send_and_ack(again, "after", client_id)
        # Above Postgres's highest and the clock in µs: no (room, seq) can name two messages.
        assert after["seq"] >= (time.time_ns() // 1000) - 60_000_000
        assert [m["seq"] for m in await again.messages(1)] == [after["seq"]]


def test_deployment_renew_replaces_the_identity():
    before = deployment_identity()
    try:
        renewed = deployment_renew()
        assert renewed != before and deployment_identity() == renewed and Deployment.objects.count() == 1
    finally:  # the run's web instances keep theirs for a minute: put it back before they reload
        Deployment.objects.update(identity=before)


async def test_a_retry_after_redis_lost_the_room_gets_the_first_id_and_seq(web_a, web_b, worker, alice, bob, room):
    """A message stored, its idempotency entry lost with Redis's state (a failover to a replica that
    lacked it, a restart): the room's new epoch puts the entries back from Postgres, so the retry of
    a message whose ack the client never saw is answered with the first id and seq, and the room
    gets no second copy."""
    client = redis.Redis.from_url(SERVICES["REDIS_URL"])
    client_id = unique("lost-ack")
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        first = await send_and_ack(a, "its ack was lost", client_id)
    await asyncio.to_thread(wait_until, lambda: Message.objects.filter(room=room, client_id=client_id).exists(), 30,
                            message="the message stored")
    base = f"{TEST_ENV['CHAT_REDIS_PREFIX']}:{hash_tag(partition_of(room.id))}:room:{room.id}"
    lost = list(client.scan_iter(match=f"{base}:*"))
    assert lost and client.delete(*lost) == len(lost)  # every key of the room: counter, buffer, entries
    async with chat_socket(web_b, room.slug, bob.cookie, after=first["seq"]) as b, \
            chat_socket(web_a, room.slug, alice.cookie, after=first["seq"]) as a:
        again = await send_and_ack(a, "its ack was lost", client_id)
        assert (again["id"], again["seq"]) == (first["id"], first["seq"])
        fresh = await send_and_ack(a, "a new one")
        assert fresh["seq"] > first["seq"]
        # The retry was not broadcast again: the other reader's next message is the new one.
        assert [m["id"] for m in await b.messages(1)] == [fresh["id"]]
    await asyncio.to_thread(wait_until, lambda: Message.objects.filter(room=room).count() == 2, 30,
                            message="both stored")
    assert await asyncio.to_thread(Message.objects.filter(room=room, client_id=client_id).count) == 1
