"""Rooms spread over the three local Redis shards (scripts/services.sh up redis-shards, contract
§7) with two web instances: each room's keys sit on its partition's primary only, messages of
every room cross instances in order, and a replay spans the recent buffer and Postgres. Then the
same through Sentinel while a shard's primary is killed: nothing acked is lost or doubled, no seq
names two messages, and rooms on the other shards do not pause."""

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time

import pytest
import redis
from django.db import connections

from chat.models import Message
from chat.shards import hash_tag, partition_of, shard_of
from tests.conftest import RUN, child_env, make_room, make_user, session_cookie
from tests.support import (
    ROOT,
    FailoverProxy,
    StayingReader,
    StayingSender,
    WebServer,
    chat_socket,
    unique,
    wait_until,
)

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
    connections.close_all()  # this async context's connection may predate earlier tests' Postgres restarts
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
        key = f"{prefix}:{hash_tag(partition_of(room.id))}:room:{room.id}:meta"
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


CLOCK_FLOOR = 10**15  # µs since 1970: any seq of an epoch seeded from the clock is above it
SENTINEL_URLS = " ".join(f"redis+sentinel://127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382/shard{index}/0"
                         for index in range(3))


def sentinel_master_port(name: str) -> int:
    return int(redis.Redis(port=26380, decode_responses=True).sentinel_get_master_addr_by_name(name)[1])


def first_new_epoch_arrival(reader: StayingReader) -> float | None:
    """A new room's first epoch counts from 1; one started after a loss, above the clock in µs."""
    return next((arrived for _, _, seq, _, arrived in reader.trace if seq > CLOCK_FLOOR), None)


def longest_pause(reader: StayingReader, start: float, end: float) -> float:
    times = [arrived for *_, arrived in reader.trace if start <= arrived <= end]
    return max((b - a for a, b in itertools.pairwise(times)), default=end - start)


async def chat_through_a_kill(name: str, before_kill) -> float:
    """A sender and a reader in a room on each shard through Sentinel URLs and two instances; once
    each room has traffic, `before_kill()` runs and shard1's primary is killed with SIGKILL. Checks
    what must hold whatever the replica had; returns how long shard1's room took to deliver again."""
    connections.close_all()  # this async context's connection may predate earlier tests' Postgres restarts
    env = child_env(REDIS_URLS=SENTINEL_URLS, CHAT_REDIS_PREFIX=f"chat-test-{name}-{RUN}")
    servers = [WebServer(f"web-{name}-{letter}-{RUN}", env).start() for letter in ("a", "b")]
    balancer = FailoverProxy([server.port for server in servers], rotate=True).start()
    alice, bob = make_user("alice"), make_user("bob")
    alice.cookie, bob.cookie = session_cookie(alice), session_cookie(bob)
    rooms = rooms_on_every_shard(alice, per_shard=1)
    stop = asyncio.Event()
    readers = [StayingReader(balancer, room.slug, bob.cookie) for room in rooms]
    senders = [StayingSender(balancer, room.slug, alice.cookie, count=200, interval=0.03) for room in rooms]
    reading = [asyncio.ensure_future(reader.run(stop)) for reader in readers]
    try:
        sending = asyncio.gather(*(sender.run(time.monotonic() + 120) for sender in senders))
        await asyncio.to_thread(wait_until, lambda: min(len(s.acked) for s in senders) >= 40, 60, 0.05, "traffic")
        await asyncio.to_thread(before_kill, senders[1])
        victim = redis.Redis(port=PRIMARIES[1])
        os.kill(int(victim.info("server")["process_id"]), signal.SIGKILL)
        killed = time.monotonic()
        await sending
        done = time.monotonic()
        await asyncio.to_thread(wait_until, lambda: sentinel_master_port("shard1") == 6391, 30, 0.1,
                                "Sentinel to promote shard1's replica")
        acked = [sorted(seq for _, seq in sender.acked.values()) for sender in senders]
        pairs = list(zip(readers, acked, strict=True))
        await asyncio.to_thread(wait_until, lambda: all(set(r.seqs) >= set(a) for r, a in pairs), 60, 0.1,
                                "every reader to have every acked message")
    finally:
        stop.set()
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
        balancer.stop()
        for server in servers:
            server.stop()
        redis.Redis(port=6391).config_set("masterauth", "")  # in case before_kill set it
        services("up", "redis-shards")  # the killed primary back, as shard1's master again

    assert max(acked[1]) > CLOCK_FLOOR > max(acked[0] + acked[2]), "shard1's rooms started a new epoch, no other"
    resumed = first_new_epoch_arrival(readers[1]) - killed
    pauses = [longest_pause(reader, killed, done) for reader in (readers[0], readers[2])]
    print(f"\n{name}: shard1 delivering again {resumed:.2f} s after the kill; longest pause on shard0 and shard2:"
          f" {pauses[0]:.2f} s, {pauses[1]:.2f} s; reconnects {[r.reconnects for r in readers]}")
    assert readers[0].reconnects == readers[2].reconnects == 0 and max(pauses) < 2, "another shard paused"
    for reader, seqs in zip(readers, acked, strict=True):
        assert len(seqs) == len(set(seqs)) == 200, "a seq was handed out twice"
        assert reader.seqs == sorted(set(reader.seqs)), "a reader saw a message twice or out of order"
    for room, sender, seqs in zip(rooms, senders, acked, strict=True):
        ids = {message_id for message_id, _ in sender.acked.values()}
        wait_until(lambda room=room, ids=ids: Message.objects.filter(room=room).count() >= len(ids), 60,
                   message="every acked message stored")
        stored = list(Message.objects.filter(room=room).order_by("seq").values_list("id", "seq"))
        assert {str(message_id) for message_id, _ in stored} == ids, "an acked message lost or stored twice"
        assert [seq for _, seq in stored] == seqs, "a stored seq differs from the acked one"
    return resumed


async def test_kill_9_of_a_shards_primary_loses_doubles_and_pauses_nothing_elsewhere(shards, worker):
    assert await chat_through_a_kill("failover", lambda sender: None) < 10


async def test_a_promoted_replica_that_lacks_acked_writes_hands_out_no_seq_twice(shards, worker):
    behind = {}

    def cut_the_replica(sender: StayingSender) -> None:
        primary, replica = redis.Redis(port=PRIMARIES[1]), redis.Redis(port=6391)
        # A wrong password keeps the replica from reconnecting: it stays where the cut left it.
        replica.config_set("masterauth", "not-the-primarys")
        primary.client_kill_filter(_type="replica")
        wait_until(lambda: replica.info("replication")["master_link_status"] == "down", 10, 0.02, "the link cut")
        acked_at_cut = len(sender.acked)
        wait_until(lambda: len(sender.acked) >= acked_at_cut + 10, 10, 0.02, "acks the replica has not got")
        behind["primary"] = primary.info("replication")["master_repl_offset"]
        behind["replica"] = replica.info("replication")["slave_repl_offset"]

    await chat_through_a_kill("lagging", cut_the_replica)
    assert behind["replica"] < behind["primary"], behind
    print(f"the promoted replica lacked {behind['primary'] - behind['replica']} bytes of acked writes")
