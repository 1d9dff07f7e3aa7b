"""bench.storm's client reconnects as the web client does: backoff and jitter, ?after= with the
newest seq it has, a 1013's retry_after hint honoured; and its plan spreads sockets as a
deployment would."""

import asyncio
import json
import time
from collections import Counter

from websockets.asyncio.server import serve

from bench.storm import Balancer, Gate, Shared, StormClient, backoff, plan_sockets, retry_hint


def test_backoff_is_the_web_clients():
    for _ in range(200):
        assert 0 <= backoff(0) < 0.5
        assert 0 <= backoff(1) < 1.0
        assert 0 <= backoff(3) < 4.0
        assert 0 <= backoff(12) < 30.0


def test_retry_hint_from_a_close_reason():
    assert retry_hint("retry_after=1.5") == 1.5
    assert retry_hint("join queue full; retry_after=2") == 2.0
    assert retry_hint("") is None
    assert retry_hint("retry_after=soon") is None


def test_plan_spreads_users_rooms_and_instances():
    plan = plan_sockets(10_000, 1_000, 100)
    rooms_of: dict[int, list[int]] = {}
    for user, room, _ in plan:
        rooms_of.setdefault(user, []).append(room)
    assert all(len(rooms) == len(set(rooms)) == 10 for rooms in rooms_of.values())  # distinct rooms per user
    assert set(Counter(room for _, room, _ in plan).values()) == {100}
    assert Counter(instance for *_, instance in plan) == {0: 5_000, 1: 5_000}
    assert all({i for u, _, i in plan if u == user} == {0, 1} for user in range(0, 1_000, 97))


def frame(fields: dict) -> str:
    return json.dumps(fields, separators=(",", ":"))  # compact, as the server writes them


async def test_client_resumes_after_1012_and_honours_1013():
    paths: list[str] = []

    async def handler(ws) -> None:
        paths.append(ws.request.path)
        if len(paths) == 1:  # the first connection: hello, two messages, then the drain's close
            await ws.send(frame({"type": "hello", "last_seq": 0}))
            for seq in (1, 2):
                await ws.send(frame({"type": "message", "seq": seq, "body": f"{time.time_ns()}:x"}))
            await asyncio.sleep(0.1)
            await ws.close(1012)
        elif len(paths) == 2:  # the survivor's join limit
            await ws.close(1013, "retry_after=0.3")
        else:
            await ws.send(frame({"type": "hello", "last_seq": 3}))
            await ws.send(frame({"type": "message", "seq": 3, "body": f"{time.time_ns()}:x"}))
            await ws.send(frame({"type": "resumed", "last_seq": 3}))
            await ws.send(frame({"type": "message", "seq": 4, "body": f"{time.time_ns()}:x"}))
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        shared = Shared(drained=0)
        shared.drain_ns = time.time_ns()  # the drain under way: closes count
        # Two "instances" (the same server): the first drains, so reconnects go to the second.
        balancer = Balancer([f"ws://127.0.0.1:{port}"] * 2, "http://127.0.0.1")
        balancer.take_out(0)
        client = StormClient(0, "cookie", 0, "r", 0, balancer, shared)
        began = time.monotonic()
        task = asyncio.ensure_future(client.run(Gate(1, "127.0.0.1")))
        while not (client.resumed_ns and 4 in client.seqs):
            assert time.monotonic() - began < 10, f"not resumed: {paths}, {client.codes}"
            await asyncio.sleep(0.05)
        waited = time.monotonic() - began
        codes = dict(client.codes)  # before the server's own close as it stops
        client.stopped = True
        task.cancel()

    assert paths == ["/ws/chat/r/", "/ws/chat/r/?after=2", "/ws/chat/r/?after=2"]
    assert list(client.seqs) == [1, 2, 3, 4] and client.out_of_order == 0
    assert codes == {1012: 1, 1013: 1}
    assert client.hints == [0.3] and waited >= 0.3
    assert client.attempts == 2  # after the 1012: the refused attempt, then the one that resumed
    assert client.instance == 1
    assert list(shared.kinds) == [2, 2, 1]  # live on the draining instance, then moved (seq 3 was a replay)
