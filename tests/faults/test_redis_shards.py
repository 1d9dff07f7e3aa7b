"""Rooms spread over the three local Redis shards (scripts/services.sh up redis-shards, contract
§7) with two web instances: each room's keys sit on its partition's primary only, messages of
every room cross instances in order, and a replay spans the recent buffer and Postgres."""

import asyncio
import contextlib
import subprocess

import pytest
import redis

from chat.models import Message
from chat.shards import hash_tag, partition_of, shard_of
from tests.conftest import RUN, child_env, make_room, make_user, session_cookie
from tests.support import ROOT, WebServer, chat_socket, unique, wait_until

pytestmark = pytest.mark.faults

PRIMARIES = (6380, 6381, 6382)
PLAIN_URLS = " ".join(f"redis://127.0.0.1:{port}/0" for port in PRIMARIES)
BUFFER = 10  # messages per room kept in Redis: a replay from 0 of 25 reads Postgres, then the buffer


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=240)


@pytest.fixture(scope="module")
def shards():
    services("up", "redis-shards")
    yield
    services("down", "redis-shards")


@pytest.fixture(scope="module")
def sharded(shards):
    """Two web instances on the three plain primaries, with a key prefix of their own."""
    prefix = f"chat-test-shards-{RUN}"
    env = child_env(REDIS_URLS=PLAIN_URLS, CHAT_REDIS_PREFIX=prefix, CHAT_RECENT_BUFFER=str(BUFFER))
    servers = [WebServer(f"web-shards-{name}-{RUN}", env).start() for name in ("a", "b")]
    yield prefix, servers
    for server in servers:
        server.stop()


def rooms_on_every_shard(owner, per_shard: int = 2) -> list:
    """Rooms created until each of the three shards holds `per_shard` of them."""
    rooms: dict[int, list] = {0: [], 1: [], 2: []}
    while min(map(len, rooms.values())) < per_shard:
        room = make_room(owner)
        shard = shard_of(partition_of(room.id), len(PRIMARIES))
        if len(rooms[shard]) < per_shard:
            rooms[shard].append(room)
    return [room for shard in sorted(rooms) for room in rooms[shard]]


async def test_rooms_spread_over_three_shards_and_cross_instances_in_order(sharded, worker):
    prefix, (web_a, web_b) = sharded
    alice, bob = make_user("alice"), make_user("bob")
    alice.cookie, bob.cookie = session_cookie(alice), session_cookie(bob)
    rooms = rooms_on_every_shard(alice)
    count = 25
    acks: dict[int, list[int]] = {room.id: [] for room in rooms}
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(60):
        readers = {room.id: await stack.enter_async_context(chat_socket(web_b, room.slug, bob.cookie))
                   for room in rooms}
        senders = {room.id: await stack.enter_async_context(chat_socket(web_a, room.slug, alice.cookie))
                   for room in rooms}
        for n in range(count):  # interleaved over the rooms of every shard
            for room in rooms:
                await senders[room.id].send({"type": "message.send", "body": f"{room.id} {n}",
                                             "client_id": unique("c")})
        for room in rooms:
            for _ in range(count):
                acks[room.id].append((await senders[room.id].recv_type("ack"))["seq"])
            got = await readers[room.id].messages(count)
            assert [m["body"] for m in got] == [f"{room.id} {n}" for n in range(count)]
            acks[room.id].sort()  # acks come as Kafka confirms, not necessarily in seq order
            assert [m["seq"] for m in got] == acks[room.id]

    # Each room's keys live on its own shard's primary only, under its partition's hash tag.
    nodes = [redis.Redis(port=port, decode_responses=True) for port in PRIMARIES]
    for room in rooms:
        key = f"{prefix}:{hash_tag(partition_of(room.id))}:room:{room.id}:seq"
        holders = [index for index, node in enumerate(nodes) if node.exists(key)]
        assert holders == [shard_of(partition_of(room.id), 3)], (room.id, key, holders)
    assert all(node.dbsize() > 0 for node in nodes)

    # A replay from 0 spans Postgres (the first 15) and the buffer (the last 10), on every shard.
    wait_until(lambda: Message.objects.filter(room__in=rooms).count() == count * len(rooms), 30,
               message="every message stored")
    for room in rooms:
        async with chat_socket(web_b, room.slug, bob.cookie, after=0) as again:
            replayed = await again.messages(count)
            assert [m["seq"] for m in replayed] == acks[room.id]
            assert (await again.recv_type("resumed"))["last_seq"] == acks[room.id][-1]
