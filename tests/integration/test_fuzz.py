"""Fuzz: several users throw random sequences of every frame kind at one instance (valid, invalid,
duplicated, oversized, at line rate, reading or not) while two other users chat in the same room.
The instance's memory stays bounded, the chatting pair gets every message exactly once, in order and
promptly, and the instance still serves. The seed is printed; FUZZ_SEED=<n> replays a run."""

import asyncio
import json
import os
import random
import time
import uuid

import httpx
import pytest
import websockets

from tests.conftest import RUN, child_env, make_room, make_user, session_cookie
from tests.support import WebServer, chat_socket

FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", 20))
FUZZERS = 4  # users, two sockets each
MEMORY_GROWTH_LIMIT_MB = 50  # 8 flooding sockets' bounded buffers, in and out, and the allocator's slack
LATE_GROWTH_LIMIT_MB = 15
DELIVERY_LIMIT_S = 3.0


def random_text(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return ""
    if kind == 1:
        return "x" * rng.choice([4001, 20_000, 60_000])  # over the message limit, under the frame limit
    if kind == 2:
        return "a\x00b" + "é" * rng.randrange(50)
    if kind == 3:
        return "<script>alert(1)</script> @" + "".join(rng.choices("abcdef", k=8))
    return "".join(rng.choices("abcdefghij klmnop", k=rng.randrange(1, 200)))


def random_frame(rng: random.Random, known_ids: list[str], client_ids: list[str]) -> str | bytes:
    """One frame, as text (or, rarely, a binary frame or broken JSON)."""
    some_id = rng.choice(known_ids) if known_ids and rng.random() < 0.5 else str(uuid.UUID(int=rng.getrandbits(128)))
    odd = rng.choice([None, 0, -1, 2**63, "7", [], {}, True, 1.5])
    kind = rng.randrange(14)
    if kind == 0:
        return "{not json" + "}" * rng.randrange(3)
    if kind == 1:
        return bytes(rng.getrandbits(8) for _ in range(16))  # closes the socket (1003): reconnect
    frames = [
        {"type": "message.send", "body": random_text(rng), "client_id": rng.choice(client_ids)},
        {"type": "message.send", "body": odd, "client_id": odd},
        {"type": "message.edit", "id": some_id, "body": random_text(rng)},
        {"type": "message.delete", "id": some_id},
        {"type": "message.report", "id": some_id, "reason": random_text(rng)},
        {"type": "typing", "active": rng.choice([True, False, odd])},
        {"type": "read", "seq": rng.choice([0, 1, 10**12, -5, odd])},
        {"type": "resume", "after": rng.choice([0, 0, 1, -1, 10**12, odd])},
        {"type": "ping"},
        {"type": rng.choice(["nope", "", "message", "hello", odd])},
        {"type": "message.send"},
        {"type": "reaction.add", "id": some_id, "emoji": random_text(rng)[:4]},
    ]
    return json.dumps(frames[kind - 2])


async def fuzz_socket(server: WebServer, slug: str, cookie: str, rng: random.Random, deadline: float,
                      known_ids: list[str], stats: dict) -> None:
    """Send random frames until the deadline, reading (or, at times, not reading) what comes back;
    reconnect when the server closes the socket."""
    client_ids = [f"fz-{rng.getrandbits(32):x}" for _ in range(3)]
    while time.monotonic() < deadline:
        try:
            async with chat_socket(server, slug, cookie, hello=False) as ws:
                reading = rng.random() < 0.8
                while time.monotonic() < deadline:
                    await ws.ws.send(random_frame(rng, known_ids, client_ids))
                    stats["sent"] += 1
                    while reading:
                        try:
                            frame = json.loads(await asyncio.wait_for(ws.ws.recv(), 0.001))
                        except TimeoutError:
                            break
                        stats[frame.get("type", "?")] = stats.get(frame.get("type", "?"), 0) + 1
                        if frame.get("type") == "message":
                            known_ids.append(frame["id"])
                    await asyncio.sleep(0)
        except (websockets.ConnectionClosed, OSError, TimeoutError) as exc:
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            stats.setdefault("closes", []).append(code)
            await asyncio.sleep(0.05)


def rss_mb(server: WebServer) -> float:
    with open(f"/proc/{server.proc.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.parametrize("server_kind", ["daphne", "uvicorn"])
async def test_random_frames_from_many_users_leave_memory_bounded_and_others_chatting(worker, server_kind):
    seed = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
    print(f"\nfuzz seed: {seed} (FUZZ_SEED={seed} replays it)")
    # The production default rate limit, so every limit is live as it would be.
    server = WebServer(f"fuzz-{server_kind}-{RUN}", child_env(CHAT_RATE_LIMIT="20/10s"), server=server_kind).start()
    try:
        owner, speaker, listener = make_user("owner"), make_user("speaker"), make_user("listener")
        room = make_room(owner)
        fuzzers = [make_user("fuzzer") for _ in range(FUZZERS)]
        rss_start = rss_mb(server)
        rss: list[float] = []
        stats = {"sent": 0}
        known_ids: list[str] = []
        received: list[tuple[int, str, float]] = []
        sent_at: dict[str, float] = {}
        async with chat_socket(server, room.slug, session_cookie(speaker)) as talk, \
                chat_socket(server, room.slug, session_cookie(listener)) as hear:
            deadline = time.monotonic() + FUZZ_SECONDS

            async def speak():
                n = 0
                while time.monotonic() < deadline:
                    body = f"chat {n}"
                    sent_at[body] = time.monotonic()
                    await talk.send({"type": "message.send", "body": body, "client_id": f"talk-{n}"})
                    n += 1
                    await asyncio.sleep(0.6)  # within 20/10s

            async def listen():
                while time.monotonic() < deadline + DELIVERY_LIMIT_S:
                    try:
                        frame = await hear.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    if frame["type"] == "message" and frame["author"]["username"] == speaker.username:
                        received.append((frame["seq"], frame["body"], time.monotonic()))

            async def drain_speaker():  # keeps its frames (acks) in talk.frames
                while time.monotonic() < deadline + DELIVERY_LIMIT_S:
                    try:
                        await talk.recv(timeout=0.5)
                    except TimeoutError:
                        continue

            async def sample_memory():
                while time.monotonic() < deadline:
                    rss.append(rss_mb(server))
                    await asyncio.sleep(1)

            rngs = [random.Random(seed * 100 + i) for i in range(FUZZERS * 2)]
            fuzzing = [fuzz_socket(server, room.slug, session_cookie(fuzzers[i // 2]), rngs[i], deadline, known_ids,
                                   stats) for i in range(FUZZERS * 2)]
            await asyncio.gather(speak(), listen(), drain_speaker(), sample_memory(), *fuzzing)
            acks = [frame for frame in talk.frames if frame["type"] == "ack"]

        print(f"fuzz: {stats['sent']} frames sent; answers: "
              f"{ {k: v for k, v in stats.items() if k not in ('sent', 'closes')} }; "
              f"closes: {sorted(set(stats.get('closes', [])), key=str)}")
        print(f"fuzz: web RSS {rss_start:.0f} MB before, each second: {' '.join(f'{mb:.0f}' for mb in rss)}")
        # Bounded: the growth levels off (the second half adds little) and stays under a cap.
        half = len(rss) // 2
        assert max(rss) - rss_start < MEMORY_GROWTH_LIMIT_MB
        assert max(rss[half:]) - max(rss[:half]) < LATE_GROWTH_LIMIT_MB

        # The chatting pair: every message of the speaker, exactly once, in seq order, promptly.
        bodies = [body for _, body, _ in received]
        assert bodies == sorted(sent_at, key=sent_at.get), "listener missed, repeated or reordered a message"
        assert [seq for seq, _, _ in received] == sorted({seq for seq, _, _ in received})
        delays = {body: at - sent_at[body] for _, body, at in received}
        late = {body: round(delay, 2) for body, delay in delays.items() if delay > DELIVERY_LIMIT_S}
        assert not late, f"deliveries slower than {DELIVERY_LIMIT_S} s: {late}"
        assert len(acks) == len(sent_at), "the speaker was not acked for every message"

        # The instance still serves.
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    finally:
        server.stop()
