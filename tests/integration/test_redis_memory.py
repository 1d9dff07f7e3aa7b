"""Redis memory follows what is live (contract §4's idempotency window, CHAT_ROOM_IDLE_SECONDS):
a retry within the window gets the first message's id and seq even after the worker stored it; the
window's entries cost under 60 bytes a message; a quiet room's buffer leaves Redis and a resume
from an old seq still has no gap; after a burst over many rooms goes quiet, Redis keeps a small
fraction of what the burst took."""

import asyncio
import secrets
import uuid

import pytest
from django.test import override_settings

from chat.models import Message
from chat.roomstate import room_state
from tests.conftest import child_env, make_room
from tests.support import WebServer, chat_socket, state_message, unique, wait_until

pytestmark = pytest.mark.usefixtures("worker")

BYTES_PER_MESSAGE_TARGET = 60


async def room_keys_bytes(room_id: int) -> dict[str, int]:
    """Redis's own count (MEMORY USAGE) of every key of the room, by kind (the part after its id)."""
    shard, base = room_state()._room(room_id)
    sizes: dict[str, int] = {}
    async for key in shard.redis.scan_iter(match=f"{base}:*", count=1000):
        kind = key.decode()[len(base) + 1:].split(":")[0]
        sizes[kind] = sizes.get(kind, 0) + (await shard.redis.memory_usage(key, samples=0) or 0)
    return sizes


async def send_many(room_id: int, count: int, body_size: int = 40) -> dict[str, tuple[str, int]]:
    """`count` sends of distinct client_ids straight into the room's state; client_id -> (id, seq)."""
    state, sent = room_state(), {}
    for n in range(count):
        client_id = uuid.uuid4().hex
        body = secrets.token_urlsafe(body_size)[:body_size]
        outcome = await state.send(room_id=room_id, user_id=7, client_id=client_id,
                                   message=state_message(room_id, 7, body), seed=0 if n == 0 else None)
        assert outcome.status == "ok", outcome
        sent[client_id] = (outcome.message_id, outcome.seq)
    return sent


async def test_a_retry_in_the_window_gets_the_first_id_and_seq_after_the_worker_stored_it(web_a, alice, room):
    client_id = unique("once")
    async with chat_socket(web_a, room.slug, alice.cookie) as sock:
        await sock.send({"type": "message.send", "body": "only once", "client_id": client_id})
        first = await sock.recv_type("ack")
    await asyncio.to_thread(wait_until, lambda: Message.objects.filter(room=room, client_id=client_id).exists(), 30,
                            message="the message stored")
    async with chat_socket(web_a, room.slug, alice.cookie) as sock:
        await sock.send({"type": "message.send", "body": "only once", "client_id": client_id})
        again = await sock.recv_type("ack")
    assert (again["id"], again["seq"]) == (first["id"], first["seq"])
    assert await asyncio.to_thread(Message.objects.filter(room=room).count) == 1


async def test_the_windows_entries_cost_under_60_bytes_a_message_and_each_retry_is_recognised():
    room_id = 10**12 + secrets.randbelow(10**9)  # a room of Redis state only
    count = 6000
    sent = await send_many(room_id, count)
    sizes = await room_keys_bytes(room_id)
    per_message = (sizes.get("cid", 0) + sizes.get("cidx", 0)) / count
    print(f"\nidempotency entries: {per_message:.1f} bytes a message over {count} sends in one room ({sizes})")
    assert per_message <= BYTES_PER_MESSAGE_TARGET
    state = room_state()
    for client_id in list(sent)[:: count // 50]:
        outcome = await state.send(room_id=room_id, user_id=7, client_id=client_id,
                                   message=state_message(room_id, 7, "retry"), seed=None)
        assert (outcome.status, outcome.message_id, outcome.seq) == ("dup", *sent[client_id])
        assert not outcome.acked
    # The same client_id from another user is another message.
    other = await state.send(room_id=room_id, user_id=8, client_id=next(iter(sent)),
                             message=state_message(room_id, 8, "mine"), seed=None)
    assert other.status == "ok" and other.seq == count + 1
    # Once Kafka has it, a retry is answered as acked.
    client_id = next(iter(sent))
    await state.send_acked(room_id=room_id, user_id=7, client_id=client_id, message_id=sent[client_id][0],
                           seq=sent[client_id][1])
    outcome = await state.send(room_id=room_id, user_id=7, client_id=client_id, message=state_message(room_id, 7, "x"),
                               seed=None)
    assert (outcome.status, outcome.acked, outcome.seq) == ("dup", True, sent[client_id][1])


async def test_a_quiet_room_leaves_redis_and_a_resume_from_an_old_seq_has_no_gap(alice):
    room = await asyncio.to_thread(make_room, alice)
    web = WebServer(unique("web-idle"), child_env(CHAT_ROOM_IDLE_SECONDS="2")).start()
    try:
        async with chat_socket(web, room.slug, alice.cookie) as sock:
            for n in range(5):
                await sock.send({"type": "message.send", "body": f"before the quiet {n}", "client_id": unique("q")})
                await sock.recv_type("ack")
        await asyncio.to_thread(wait_until, lambda: Message.objects.filter(room=room).count() == 5, 30,
                                message="the messages stored")

        async def buffer_left() -> bool:
            return "recent" not in await room_keys_bytes(room.id) and "ids" not in await room_keys_bytes(room.id)

        for _ in range(100):
            if await buffer_left():
                break
            await asyncio.sleep(0.1)
        assert await buffer_left(), await room_keys_bytes(room.id)
        async with chat_socket(web, room.slug, alice.cookie, after=1) as sock:
            replayed = [await sock.recv_type("message") for _ in range(4)]
            assert [m["seq"] for m in replayed] == [2, 3, 4, 5]
            assert sock.hello["last_seq"] == 5
            await sock.send({"type": "message.send", "body": "after the quiet", "client_id": unique("q")})
            assert (await sock.recv_type("ack"))["seq"] == 6  # the counter stayed: no new epoch, no jump
    finally:
        web.stop()


async def test_after_a_burst_over_many_rooms_goes_quiet_redis_keeps_a_small_fraction():
    rooms = [10**12 + secrets.randbelow(10**9) for _ in range(40)]
    with override_settings(CHAT_ROOM_IDLE_SECONDS=2):
        for room_id in rooms:
            await send_many(room_id, 50, body_size=400)
    during = [sum((await room_keys_bytes(room_id)).values()) for room_id in rooms]

    async def quiet() -> list[int]:
        return [sum((await room_keys_bytes(room_id)).values()) for room_id in rooms]

    async def buffers_left() -> bool:
        return all(["recent" not in await room_keys_bytes(room_id) for room_id in rooms])

    for _ in range(100):
        if await buffers_left():
            break
        await asyncio.sleep(0.1)
    assert await buffers_left()
    after = await quiet()
    print(f"\n{len(rooms)} rooms x 50 messages of 400 characters: {sum(during)} bytes of Redis while active, "
          f"{sum(after)} once quiet ({sum(after) / len(rooms):.0f} a quiet room, the idempotency window and "
          f"the counter)")
    assert sum(after) <= 0.15 * sum(during)
