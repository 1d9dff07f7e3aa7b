"""No one user can hurt an instance: every frame kind that costs the server is rate-limited per user
across instances (a retried client_id costs a token and is never enqueued again once Kafka has it;
typing is relayed at most once a start and once a stop per throttle), and one user's open sockets
are capped across instances, a crashed instance's sockets ceasing to count on their own."""

import asyncio
import os
import time
import uuid

import pytest
import websockets
from kafka import KafkaConsumer, TopicPartition

from chat.bus import backlog, records
from chat.limits import parse_rate
from tests.conftest import SERVICES, child_env
from tests.support import WebServer, chat_socket, unique

pytestmark = pytest.mark.usefixtures("worker")

FLOOD = 300
SEND_RATE = "20/10s"


@pytest.fixture
def limited():
    """Two instances with the default limits (sends at 20/10s) and buckets of their own."""
    env = child_env(CHAT_RATE_LIMIT=SEND_RATE, CHAT_REDIS_PREFIX=unique("limits"))
    servers = [WebServer(unique("limited-a"), env).start(), WebServer(unique("limited-b"), env).start()]
    yield servers
    for server in servers:
        server.stop()


def allowed(spec: str, seconds: float) -> int:
    """The most a token bucket of `spec` lets through in `seconds`, starting full."""
    burst, per_second = parse_rate(spec)
    return burst + int(per_second * seconds) + 1


def created_records(room_id: int, message_id: str) -> int:
    """`message.created` records of one message in the run's topic, read from the room's partition."""
    topic = os.environ["KAFKA_TOPIC"]
    consumer = KafkaConsumer(bootstrap_servers=SERVICES["KAFKA_BOOTSTRAP_SERVERS"], enable_auto_commit=False)
    try:
        part = TopicPartition(topic, backlog.room_partition(room_id, list(consumer.partitions_for_topic(topic))))
        consumer.assign([part])
        consumer.seek_to_beginning(part)
        end, count = consumer.end_offsets([part])[part], 0
        while consumer.position(part) < end:
            for batch in consumer.poll(timeout_ms=1000).values():
                for item in batch:
                    record = records.decode(item.value)
                    count += record["event"] == "message.created" and record["id"] == message_id
        return count
    finally:
        consumer.close()


async def replies(sock, count: int, match) -> list[dict]:
    """The next `count` frames for which `match(frame)` holds (others stay in sock.frames)."""
    got = []
    while len(got) < count:
        frame = await sock.recv(timeout=30)
        if match(frame):
            got.append(frame)
    return got


async def test_resending_one_client_id_costs_tokens_and_never_enqueues_it_again(limited, alice, room):
    web_a, web_b = limited
    cid = unique("again")
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, alice.cookie) as b:
        await a.send({"type": "message.send", "body": "once", "client_id": cid})
        first = await a.recv_type("ack")
        started = time.monotonic()
        for n in range(FLOOD):  # from both instances: the bucket is the user's
            await (a if n % 2 else b).send({"type": "message.send", "body": "once", "client_id": cid})
        about_cid = lambda frame: frame.get("client_id") == cid and frame["type"] in ("ack", "error")  # noqa: E731
        answers = await replies(a, FLOOD // 2, about_cid) + await replies(b, FLOOD // 2, about_cid)
        elapsed = time.monotonic() - started
    acks = [f for f in answers if f["type"] == "ack"]
    limited_ = [f for f in answers if f["type"] == "error"]
    assert all(f["code"] == "rate_limited" and f["retry_after"] > 0 for f in limited_), limited_[:3]
    assert {(f["id"], f["seq"]) for f in acks} <= {(first["id"], first["seq"])}
    assert len(acks) <= allowed(SEND_RATE, elapsed) - 1, f"{len(acks)} acks in {elapsed:.1f} s"
    assert len(limited_) >= FLOOD - allowed(SEND_RATE, elapsed)
    assert created_records(room.id, first["id"]) == 1, "a retry of an acked message went to Kafka again"


async def test_edits_deletes_reports_reads_and_resumes_of_a_flood_are_rate_limited(limited, alice, room):
    web_a, _ = limited
    floods = {  # kind: (its default rate, a frame of it)
        "edit": ("10/10s", lambda: {"type": "message.edit", "id": str(uuid.uuid4()), "body": "x"}),
        "delete": ("10/10s", lambda: {"type": "message.delete", "id": str(uuid.uuid4())}),  # edits' bucket
        "report": ("5/60s", lambda: {"type": "message.report", "id": str(uuid.uuid4()), "reason": "spam"}),
        "read": ("20/10s", lambda: {"type": "read", "seq": 1}),
        "resume": ("10/60s", lambda: {"type": "resume", "after": 0}),
    }
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        for kind, (rate, frame) in floods.items():
            before, started = len(a.frames), time.monotonic()
            for _ in range(FLOOD):
                await a.send(frame())
            await a.send({"type": "ping"})
            await a.recv_type("pong", timeout=60)  # frames are handled in order: the flood is answered
            elapsed = time.monotonic() - started
            errors = [f for f in a.frames[before:] if f["type"] == "error"]
            codes = [f["code"] for f in errors]
            assert codes.count("rate_limited") >= FLOOD - allowed(rate, elapsed), (kind, elapsed, codes[:30])
            assert set(codes) <= {"rate_limited", "not_found"}, (kind, set(codes))
            assert all(f["retry_after"] > 0 for f in errors if f["code"] == "rate_limited")


async def test_a_typing_flood_is_rate_limited_and_relayed_once_a_start_and_once_a_stop_per_throttle(
        limited, alice, bob, room):
    web_a, web_b = limited
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        started = time.monotonic()
        for n in range(FLOOD):
            await a.send({"type": "typing", "active": n % 2 == 0})
        await a.send({"type": "ping"})
        await a.recv_type("pong", timeout=60)
        elapsed = time.monotonic() - started
        # A message after the flood reaches bob after every typing frame it caused (one channel, in order).
        await a.send({"type": "message.send", "body": "after typing", "client_id": uuid.uuid4().hex})
        await b.recv_type("message", timeout=30)
    limited_ = [f for f in a.frames if f["type"] == "error" and f["code"] == "rate_limited"]
    assert len(limited_) >= FLOOD - allowed("20/10s", elapsed)
    relayed = [f for f in b.frames if f["type"] == "typing"]
    windows = 1 + int(elapsed / 2.0)  # CHAT_TYPING_THROTTLE
    starts = [f for f in relayed if f["active"]]
    assert 1 <= len(starts) <= windows and len(relayed) - len(starts) <= windows, (elapsed, relayed)
    assert relayed[0]["active"] is True and relayed[0]["user"] == alice.username


async def test_the_socket_past_the_cap_closes_with_4429_and_a_closed_or_crashed_ones_stop_counting(
        limited, alice, bob, room):
    web_a, _ = limited
    doomed = WebServer(unique("limited-doomed"), limited[0].env).start()
    opened = []
    try:
        for n in range(20):  # CHAT_MAX_SOCKETS_PER_USER's default, across instances
            context = chat_socket(doomed if n < 10 else web_a, room.slug, alice.cookie)
            opened.append((context, await context.__aenter__()))
        crashing, opened = opened[:10], opened[10:]
        async with chat_socket(web_a, room.slug, alice.cookie, hello=False) as extra:
            assert await extra.close_code() == 4429
        async with chat_socket(web_a, room.slug, bob.cookie) as other:  # another user is not counted
            assert other.hello["user"]["id"] == bob.id

        context, _ = opened.pop()  # one closes: the next is let in
        await context.__aexit__(None, None, None)
        opened.append(await admitted_within(web_a, room.slug, alice.cookie, 10))

        doomed.kill()  # no disconnect runs there: its ten sockets stop counting once their entries expire
        for _, sock in crashing:
            sock.ws.transport.abort()
        for _ in range(10):
            opened.append(await admitted_within(web_a, room.slug, alice.cookie, 30))
        async with chat_socket(web_a, room.slug, alice.cookie, hello=False) as extra:
            assert await extra.close_code() == 4429, "twenty open on the live instance: the cap holds again"
    finally:
        for context, _ in opened:
            await context.__aexit__(None, None, None)
        doomed.stop()


async def admitted_within(server, slug: str, cookie: str, timeout: float):
    """Open sockets until one gets its hello instead of 4429 (a closed socket's count drops after its
    disconnect runs, a crashed instance's after CHAT_PRESENCE_TTL); the open one and its context."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        context = chat_socket(server, slug, cookie, hello=False)
        sock = await context.__aenter__()
        try:
            first = await sock.recv(timeout=10)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4429, closed
            await context.__aexit__(None, None, None)
            await asyncio.sleep(0.2)  # the next attempt, not a wait for a result
            continue
        assert first["type"] == "hello"
        return context, sock
    raise AssertionError(f"no socket admitted within {timeout} s")
