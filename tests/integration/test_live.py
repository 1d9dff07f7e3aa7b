"""The live path across two daphne instances sharing real Redis, Kafka and Postgres."""

import asyncio

import pytest

from chat.models import Message
from tests.conftest import make_room, make_user, session_cookie
from tests.support import chat_socket, unique, wait_until

pytestmark = pytest.mark.usefixtures("worker")


def client_id() -> str:
    return unique("c")


async def test_message_crosses_instances_and_is_stored_once(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        cid = client_id()
        await a.send({"type": "message.send", "body": "hello from A", "client_id": cid})
        ack = await a.recv_type("ack")
        seen_a = await a.seen_or_next("message")
        seen_b = await b.recv_type("message")
    assert ack["client_id"] == cid and ack["seq"] == seen_b["seq"] == seen_a["seq"]
    assert seen_b["id"] == ack["id"] and seen_b["body"] == "hello from A"
    assert seen_b["author"] == {"id": alice.id, "username": alice.username}
    assert seen_b["room"] == room.slug and seen_b["client_id"] == cid and seen_b["edited_at"] is None
    wait_until(lambda: Message.objects.filter(id=ack["id"]).exists(), 15, message="the message in Postgres")
    assert Message.objects.filter(room=room, client_id=cid).count() == 1


async def test_hello_is_first_and_names_room_user_and_online(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie, hello=False) as a:
        hello = await a.recv()
        assert hello["type"] == "hello"
        assert hello["room"] == {"slug": room.slug, "name": room.name, "private": False}
        assert hello["user"] == {"id": alice.id, "username": alice.username}
        assert hello["last_seq"] == 0
        async with chat_socket(web_b, room.slug, bob.cookie, hello=False) as b:
            hello_b = await b.recv()
            assert alice.username in hello_b["online"]
            presence = await a.recv_type("presence")
            while set(presence["online"]) != {alice.username, bob.username}:
                presence = await a.recv_type("presence")
        presence = await a.recv_type("presence")
        assert presence["online"] == [alice.username]


async def test_close_codes(web_a, alice, room):
    async with chat_socket(web_a, room.slug, None, hello=False) as anonymous:
        assert await anonymous.close_code() == 4401
    async with chat_socket(web_a, "no-such-room", alice.cookie, hello=False) as lost:
        assert await lost.close_code() == 4404
    outsider = make_user("outsider")
    private_room = make_room(alice, private=True)
    async with chat_socket(web_a, private_room.slug, session_cookie(outsider), hello=False) as intruder:
        assert await intruder.close_code() == 4403


async def test_cross_site_handshake_is_refused(web_a, alice, room):
    import websockets

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with chat_socket(web_a, room.slug, alice.cookie, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_ping_pong(web_a, alice, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        await a.send({"type": "ping"})
        assert (await a.recv_type("pong"))["type"] == "pong"


async def test_many_senders_one_order_everywhere(web_a, web_b, room):
    """500 messages from 5 senders on both instances arrive in the same increasing order at every client."""
    senders = [make_user("sender") for _ in range(5)]
    cookies = [session_cookie(u) for u in senders]
    servers = [web_a, web_b]
    per_sender = 100
    async with chat_socket(web_a, room.slug, cookies[0]) as r1, chat_socket(web_b, room.slug, cookies[1]) as r2:
        async def send_all(index: int):
            async with chat_socket(servers[index % 2], room.slug, cookies[index]) as s:
                for n in range(per_sender):
                    await s.send({"type": "message.send", "body": f"{index}:{n}", "client_id": f"{index}-{n}"})
                acks = [await s.recv_type("ack", timeout=30) for _ in range(per_sender)]
                return acks

        results = await asyncio.gather(*(send_all(i) for i in range(5)))
        total = 5 * per_sender
        got1 = await r1.messages(total, timeout=30)
        got2 = await r2.messages(total, timeout=30)
    seqs1 = [m["seq"] for m in got1]
    assert seqs1 == sorted(seqs1) and len(set(seqs1)) == total
    assert seqs1 == [m["seq"] for m in got2]
    acked = {ack["seq"] for acks in results for ack in acks}
    assert acked == set(seqs1)
    # Each sender's own messages keep the order they were sent in.
    for index in range(5):
        mine = [int(m["body"].split(":")[1]) for m in got1 if m["body"].startswith(f"{index}:")]
        assert mine == list(range(per_sender))
    wait_until(lambda: Message.objects.filter(room=room).count() == total, 30, message="all 500 in Postgres")


async def test_the_same_app_runs_under_uvicorn(web_a, alice, bob, room):
    from tests.conftest import child_env
    from tests.support import WebServer

    uvicorn_server = WebServer(unique("uvicorn"), child_env(), server="uvicorn").start()
    try:
        # One socket with permessage-deflate (browsers ask for it; uvicorn frames those itself), one
        # without (the frame's bytes are shared by every such socket: config/uvicorn_frames.py).
        async with chat_socket(uvicorn_server, room.slug, alice.cookie) as u, \
                chat_socket(uvicorn_server, room.slug, bob.cookie, compression=None) as plain, \
                chat_socket(web_a, room.slug, bob.cookie) as d:
            await u.send({"type": "message.send", "body": "from uvicorn", "client_id": client_id()})
            ack = await u.recv_type("ack")
            assert (await d.recv_type("message"))["seq"] == ack["seq"]
            assert (await plain.recv_type("message"))["seq"] == ack["seq"]
            # Frames of both length classes a message can have (7- and 16-bit lengths) arrive whole.
            bodies = ["from daphne", "x" * 200, "ü😀" * 900]
            for body in bodies:
                await d.send({"type": "message.send", "body": body, "client_id": client_id()})
            assert [m["body"] for m in await u.messages(3)] == bodies
            assert [m["body"] for m in await plain.messages(3)] == bodies
    finally:
        uvicorn_server.stop()
