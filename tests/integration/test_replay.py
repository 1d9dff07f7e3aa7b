"""Bounded replay: `?after=0` on a room with a long history streams it a page at a time, so sockets
that ask for everything and do not read cost the instance a page each, not the whole history, and a
socket that reads still gets every message above `after` exactly once, in order, then live ones."""

import re
import secrets
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import websockets

from chat.models import Message
from tests.conftest import child_env
from tests.support import ChatSocket, WebServer, chat_socket, unique

pytestmark = pytest.mark.usefixtures("worker")

HISTORY = 20_000  # messages of ~400 characters stored before anyone connects
SLOW_SOCKETS = 5
RSS_BOUND_MB = 40  # five whole-history replays held at once grew daphne by about 85 MB


def rss_mb(server: WebServer) -> float:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


class PeakRss:
    """The highest RSS of a process while the block runs, read from /proc every 20 ms."""

    def __init__(self, server: WebServer) -> None:
        self.server, self.peak = server, rss_mb(server)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.server))

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def store_history(room, author, count: int) -> None:
    """Stored messages 1..count, written to Postgres directly (as the worker would have). The room
    never had a Redis counter, so its first send seeds it from Postgres (rooms.room_seq_seed)."""
    Message.objects.bulk_create(
        [Message(room=room, seq=seq, author=author, body=secrets.token_urlsafe(300), client_id=f"h{seq}")
         for seq in range(1, count + 1)],
        batch_size=2000,
    )


async def slow_socket(server: WebServer, slug: str, cookie: str, after: int) -> ChatSocket:
    """A client with a tiny receive buffer that reads its hello and first message, then stops."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/ws/chat/{slug}/?after={after}", sock=raw,
                                  origin=server.url, additional_headers={"Cookie": f"sessionid={cookie}"},
                                  max_queue=1, max_size=None)
    sock = ChatSocket(ws)
    assert (await sock.recv(timeout=30))["type"] == "hello"
    await sock.recv_type("message", timeout=60)
    return sock


async def test_whole_history_replays_cost_a_page_per_socket_and_still_deliver_everything(alice, bob, room):
    store_history(room, alice, HISTORY)
    web = WebServer(unique("web-replay"), child_env(CHAT_REPLAY_PAGE="500")).start()
    slow: list[ChatSocket] = []
    try:
        async with chat_socket(web, room.slug, alice.cookie) as a:
            assert a.hello["last_seq"] == HISTORY
            live_before = []
            for n in range(3):  # in the recent buffer, not yet (or just) stored
                await a.send({"type": "message.send", "body": f"buffered {n}", "client_id": uuid.uuid4().hex})
                live_before.append((await a.recv_type("ack"))["seq"])
            assert live_before == [HISTORY + 1, HISTORY + 2, HISTORY + 3]
            # Warm up the replay path once (Postgres and buffer), so the baseline includes its code.
            async with chat_socket(web, room.slug, bob.cookie, after=HISTORY - 600) as warm:
                await warm.recv_type("resumed", timeout=60)
            baseline = rss_mb(web)

            with PeakRss(web) as rss:
                slow = [await slow_socket(web, room.slug, bob.cookie, after=0) for _ in range(SLOW_SOCKETS)]
                async with chat_socket(web, room.slug, bob.cookie, after=0) as reader:
                    seqs = []
                    while True:
                        frame = await reader.recv(timeout=60)
                        if frame["type"] == "resumed":
                            break
                        if frame["type"] == "message":
                            seqs.append(frame["seq"])
                    # Live after the replay, on a socket that is still holding slow neighbours.
                    await a.send({"type": "message.send", "body": "live", "client_id": uuid.uuid4().hex})
                    live = await reader.recv_type("message", timeout=30)
        growth = rss.peak - baseline
        print(f"\nRSS {baseline:.1f} MB before, peak {rss.peak:.1f} MB with {SLOW_SOCKETS} stalled whole-history"
              f" replays and one full one: +{growth:.1f} MB")
        assert seqs == [*range(1, HISTORY + 1), *live_before], "every message above 0 exactly once, in order"
        assert frame["last_seq"] == live_before[-1]
        assert live["body"] == "live" and live["seq"] == live_before[-1] + 1
        assert growth < RSS_BOUND_MB, f"stalled replays grew the instance by {growth:.1f} MB"
    finally:
        for sock in slow:
            sock.ws.transport.abort()
        web.stop()


async def test_a_replay_from_the_buffer_alone_is_paged_and_complete(alice, bob, room):
    """A resume the recent buffer covers is paged too (ZRANGEBYSCORE ... LIMIT), with nothing lost or doubled
    across page boundaries, and messages sent during the replay come live after it, once."""
    web = WebServer(unique("web-replay-buffer"), child_env(CHAT_REPLAY_PAGE="7", CHAT_RECENT_BUFFER="200")).start()
    try:
        async with chat_socket(web, room.slug, alice.cookie) as a:
            acks = []
            for n in range(50):
                await a.send({"type": "message.send", "body": f"m{n}", "client_id": uuid.uuid4().hex})
                acks.append((await a.recv_type("ack"))["seq"])
            async with chat_socket(web, room.slug, bob.cookie, after=acks[3]) as b:
                during = []
                for n in range(5):
                    await a.send({"type": "message.send", "body": f"during {n}", "client_id": uuid.uuid4().hex})
                    during.append((await a.recv_type("ack"))["seq"])
                resumed = await b.recv_type("resumed", timeout=30)
                replayed = [f["seq"] for f in b.frames if f["type"] == "message"]
                got = list(replayed)
                while got[-1] < during[-1]:
                    got.append((await b.recv_type("message"))["seq"])
        assert got == [*acks[4:], *during], got
        assert resumed["last_seq"] == replayed[-1]
    finally:
        web.stop()



async def test_a_resume_the_workers_have_not_stored_yet_is_made_again_later_never_with_a_gap(alice, room):
    """Past the recent buffer a resume reads Postgres; while no worker has stored the room's acked
    messages it must not replay the buffer alone (the client would skip the older ones for good):
    it closes with 1012, and the same resume, once a worker stored them, gets every one."""
    from tests.integration.test_worker import run_worker
    from tests.support import unique_topic

    topic, group = unique_topic("unstored"), unique("group")
    env = child_env(KAFKA_TOPIC=topic, KAFKA_CONSUMER_GROUP=group, CHAT_RECENT_BUFFER="5",
                    CHAT_REPLAY_CATCHUP_SECONDS="1")
    server = WebServer(unique("web-unstored"), env).start()
    worker = None
    try:
        async with chat_socket(server, room.slug, alice.cookie) as sender:
            acked = []
            for n in range(12):  # acked by Kafka, stored by nobody: no worker runs for this topic
                await sender.send({"type": "message.send", "body": f"unstored {n}", "client_id": unique("c")})
                acked.append((await sender.recv_type("ack"))["seq"])
        async with chat_socket(server, room.slug, alice.cookie, after=0) as early:
            assert await early.close_code(timeout=20) == 1012
        assert not [f for f in early.frames if f["type"] == "message"], "a replay with a gap went out"
        worker = run_worker(topic, group, unique("wunstored"), 120)
        deadline = time.monotonic() + 60
        while True:  # as a client does: the same resume again until the worker has caught up
            async with chat_socket(server, room.slug, alice.cookie, after=0) as later:
                try:
                    resumed = await later.recv_type("resumed", timeout=30)
                    break
                except websockets.ConnectionClosed as closed:
                    assert closed.rcvd.code == 1012 and time.monotonic() < deadline, closed
                    assert not [f for f in later.frames if f["type"] == "message"], "a replay with a gap went out"
        assert [f["seq"] for f in later.frames if f["type"] == "message"] == acked
        assert resumed["last_seq"] == acked[-1]
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
