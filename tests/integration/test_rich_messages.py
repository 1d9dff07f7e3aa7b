"""Reactions and replies (contract §8) across two instances sharing real Redis, Kafka and Postgres:
live frames, the message's rev under concurrent changes, history and replay, and what is stored."""

import asyncio
import contextlib

import pytest
import redis

from chat.models import Message
from tests.conftest import TEST_ENV, make_room, make_user, session_cookie
from tests.integration.test_api import client_for
from tests.support import chat_socket, unique, wait_until

pytestmark = pytest.mark.usefixtures("worker")


async def say(sock, body: str, **extra) -> dict:
    """Send a message; its ack."""
    cid = unique("c")
    await sock.send({"type": "message.send", "body": body, "client_id": cid, **extra})
    return await sock.recv_type("ack")


def stored(message_id: str) -> Message:
    wait_until(lambda: Message.objects.filter(id=message_id).exists(), 15, message="the message stored")
    return Message.objects.get(id=message_id)


async def test_reactions_are_live_on_every_instance_and_stored_with_their_rev(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        ack = await say(a, "react to me")
        await a.send({"type": "reaction.add", "id": ack["id"], "emoji": "👍"})
        seen = await b.recv_type("reaction")
        assert seen == {"type": "reaction", "id": ack["id"], "seq": ack["seq"],
                        "reactions": [{"emoji": "👍", "count": 1, "users": [alice.username]}]}
        assert await a.recv_type("reaction") == seen
        await b.send({"type": "reaction.add", "id": ack["id"], "emoji": "👍"})
        both = await a.recv_type("reaction")
        assert both["reactions"] == [{"emoji": "👍", "count": 2, "users": [alice.username, bob.username]}]
        assert await b.recv_type("reaction") == both
        await a.send({"type": "reaction.remove", "id": ack["id"], "emoji": "👍"})
        left = await b.recv_type("reaction")
        assert left["reactions"] == [{"emoji": "👍", "count": 1, "users": [bob.username]}]
        # A repeat changes nothing and sends nothing; not one emoji is refused.
        await b.send({"type": "reaction.add", "id": ack["id"], "emoji": "👍"})
        await b.send({"type": "reaction.add", "id": ack["id"], "emoji": "thumbs up"})
        error = await b.recv_type("error", "reaction")
        assert error["type"] == "error" and error["code"] == "invalid_frame"
        await b.send({"type": "reaction.add", "id": "no-such-message", "emoji": "🎉"})
        assert (await b.recv_type("error"))["code"] == "not_found"
    wait_until(lambda: stored(ack["id"]).rev == 4, 15, message="three changes stored")
    assert stored(ack["id"]).reactions == [{"emoji": "👍", "count": 1, "users": [bob.username]}]
    with client_for(web_b, bob) as client:
        history = client.get(f"/api/rooms/{room.slug}/messages/").json()["messages"]
    assert history[-1]["reactions"] == [{"emoji": "👍", "count": 1, "users": [bob.username]}]
    assert history[-1]["rev"] == 4


async def test_concurrent_reactions_and_an_edit_on_two_instances_all_count(web_a, web_b, room):
    """Every change builds on the last whichever instance makes it: none is lost to another made at once."""
    users = [make_user("fan") for _ in range(8)]
    author = users[0]
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(chat_socket(web_a, room.slug, session_cookie(author)))
        ack = await say(first, "popular")
        sockets = [first]
        for n, user in enumerate(users[1:], start=1):
            server = web_a if n % 2 else web_b
            sockets.append(await stack.enter_async_context(chat_socket(server, room.slug, session_cookie(user))))
        frames = [{"type": "reaction.add", "id": ack["id"], "emoji": glyph} for glyph in ("🎉", "❤️")]
        edit = {"type": "message.edit", "id": ack["id"], "body": "popular, edited"}

        async def react(sock, extra=()):
            for frame in (*frames, *extra):  # one socket's frames one after another; all sockets at once
                await sock.send(frame)
        await asyncio.gather(react(first, [edit]), *(react(sock) for sock in sockets[1:]))

        async def final_state():
            while True:
                frame = await first.recv_type("reaction")
                if sum(item["count"] for item in frame["reactions"]) == 2 * len(users):
                    return frame
        final = await asyncio.wait_for(final_state(), 20)
    names = sorted(user.username for user in users)
    assert [(item["emoji"], sorted(item["users"])) for item in sorted(final["reactions"], key=lambda i: i["emoji"])] \
        == [("❤️", names), ("🎉", names)]
    expected_rev = 1 + 2 * len(users) + 1
    wait_until(lambda: stored(ack["id"]).rev == expected_rev, 20, message="every change stored")
    message = stored(ack["id"])
    assert message.body == "popular, edited"
    assert sorted(user for item in message.reactions for user in item["users"]) == sorted(names * 2)


async def test_a_change_to_a_message_redis_no_longer_holds_builds_on_postgres(web_a, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        ack = await say(a, "old news")
        await a.send({"type": "reaction.add", "id": ack["id"], "emoji": "👀"})
        await a.recv_type("reaction")
    wait_until(lambda: stored(ack["id"]).rev == 2, 15, message="the reaction stored")
    # The room's buffer and changed state gone (a quiet room, or a Redis that lost them).
    client = redis.Redis.from_url(TEST_ENV["REDIS_URL"])
    keys = [key for key in client.scan_iter(f"{TEST_ENV['CHAT_REDIS_PREFIX']}:*:room:{room.id}:*")
            if not key.endswith((b":meta",))]
    client.delete(*keys)
    async with chat_socket(web_a, room.slug, bob.cookie) as b:
        await b.send({"type": "reaction.add", "id": ack["id"], "emoji": "👀"})
        frame = await b.recv_type("reaction")
    assert frame["reactions"] == [{"emoji": "👀", "count": 2, "users": [alice.username, bob.username]}]
    wait_until(lambda: stored(ack["id"]).rev == 3, 15, message="the change from Postgres's state stored")
    assert stored(ack["id"]).reactions == frame["reactions"]


async def test_replies_quote_their_parent_live_in_history_and_after_it_is_deleted(web_a, web_b, alice, bob, room):
    other_room = make_room(alice)
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        parent = await say(a, "first line\nsecond line")
        reply = await say(b, "an answer", reply_to=parent["id"])
        live = await a.recv_type("message")
        while live["id"] != reply["id"]:
            live = await a.recv_type("message")
        assert live["reply_to"] == {"id": parent["id"], "seq": parent["seq"], "excerpt": "first line",
                                    "author": {"id": alice.id, "username": alice.username}, "state": "visible"}
        # Replay from the buffer carries the quote too.
        async with chat_socket(web_b, room.slug, bob.cookie, after=parent["seq"]) as again:
            replayed = await again.recv_type("message")
        assert replayed["id"] == reply["id"] and replayed["reply_to"]["id"] == parent["id"]
        await b.send({"type": "message.send", "body": "x", "client_id": unique("c"), "reply_to": "nope"})
        assert (await b.recv_type("error"))["code"] == "not_found"
        async with chat_socket(web_a, other_room.slug, alice.cookie) as elsewhere:
            stranger = await say(elsewhere, "in another room")
        await b.send({"type": "message.send", "body": "x", "client_id": unique("c"), "reply_to": stranger["id"]})
        assert (await b.recv_type("error"))["code"] == "not_found"
        stored(reply["id"])
        with client_for(web_a, alice) as client:
            history = {m["id"]: m for m in client.get(f"/api/rooms/{room.slug}/messages/").json()["messages"]}
            assert history[parent["id"]]["reply_count"] == 1
            assert history[reply["id"]]["reply_to"]["excerpt"] == "first line"
            await a.send({"type": "message.delete", "id": parent["id"]})
            await b.recv_type("message.deleted")
            wait_until(lambda: stored(parent["id"]).deleted, 15, message="the delete stored")
            after = {m["id"]: m for m in client.get(f"/api/rooms/{room.slug}/messages/").json()["messages"]}
    assert after[reply["id"]]["reply_to"] == {"id": parent["id"], "seq": parent["seq"], "excerpt": "",
                                              "author": {"id": alice.id, "username": alice.username},
                                              "state": "deleted"}
    assert stored(reply["id"]).reply_to is not None and str(stored(reply["id"]).reply_to) == parent["id"]
