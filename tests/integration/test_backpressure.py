"""Backpressure (contract §6): a client that stops reading is cut with 4408 past a bounded buffer,
the server's memory stays bounded, other clients keep chatting, a counter shows the cut, and the
cut client recovers everything with ?after=. Under daphne (the default) and uvicorn."""

import asyncio
import re
import secrets
import socket
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import RUN, child_env
from tests.support import ChatSocket, WebServer, chat_socket


def body() -> str:
    """~4 KB that does not compress (uvicorn negotiates permessage-deflate), to fill buffers fast."""
    return secrets.token_urlsafe(2900)
FLOOD_LIMIT = 20_000  # ~80 MB: far past any buffer; the cut must come long before


def metric(server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def rss_mb(server) -> float:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


async def not_reading_socket(server, slug: str, cookie: str):
    """A real WebSocket client whose kernel buffer is tiny and which stops reading after one frame."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/ws/chat/{slug}/", sock=raw, origin=server.url,
                                  additional_headers={"Cookie": f"sessionid={cookie}"}, max_queue=1, max_size=None)
    return ChatSocket(ws)


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request, web_a):
    if request.param == "daphne":
        yield web_a
        return
    uvicorn = WebServer(f"uvicorn-bp-{RUN}", child_env(), server="uvicorn").start()
    yield uvicorn
    uvicorn.stop()


async def read_until_closed(sock) -> tuple[list[int], websockets.ConnectionClosed]:
    """The seqs of the message frames a socket gets until it is closed, and how it was closed."""
    seen = []
    try:
        while True:
            frame = await sock.recv(timeout=15)
            if frame["type"] == "message":
                seen.append(frame["seq"])
    except websockets.ConnectionClosed as closed:
        return seen, closed


async def test_a_client_that_stops_reading_is_cut_and_recovers_with_after(server, worker, alice, bob, room):
    cuts_before = metric(server, "chat_slow_consumer_cuts_total")
    slow = await not_reading_socket(server, room.slug, alice.cookie)
    rss_before = rss_mb(server)
    sent_seqs: list[int] = []
    async with chat_socket(server, room.slug, bob.cookie) as b:
        flooded = 0
        while metric(server, "chat_slow_consumer_cuts_total") == cuts_before:
            assert flooded < FLOOD_LIMIT, f"no cut after {flooded} frames of ~4 KB"
            for _ in range(200):
                await b.send({"type": "message.send", "body": body(), "client_id": uuid.uuid4().hex})
            sent_seqs += [(await b.recv_type("message"))["seq"] for _ in range(200)]  # bob keeps reading
            flooded += 200
        # The cut client reads again now (the server keeps its close for SLOW_CONSUMER_DROP_SECONDS
        # while it catches up), beside the traffic that follows.
        reading = asyncio.ensure_future(read_until_closed(slow))
        for _ in range(5):  # more traffic after the cut: the cut socket costs nothing more
            for _ in range(200):
                await b.send({"type": "message.send", "body": body(), "client_id": uuid.uuid4().hex})
            sent_seqs += [(await b.recv_type("message"))["seq"] for _ in range(200)]
        assert rss_mb(server) - rss_before < 60, "the server kept buffering for a client that does not read"
        await b.send({"type": "ping"})
        await b.recv_type("pong")  # the reading client is unaffected

    # The cut client read what it was sent, in order, then the 4408.
    seen, closed = await reading
    assert closed.rcvd is not None and closed.rcvd.code == 4408
    assert seen == sorted(seen) and seen == sent_seqs[: len(seen)]

    # And recovers the rest with ?after=, like any reconnect.
    async with chat_socket(server, room.slug, alice.cookie, after=seen[-1] if seen else 0) as again:
        await again.recv_type("resumed", timeout=30)
        replayed = [f["seq"] for f in again.frames if f["type"] == "message"]
    assert replayed == sent_seqs[len(seen):]
