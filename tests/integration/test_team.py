"""Team features (contract §6) on the real stack: read state kept in step across a user's sockets
and instances with unread counts, direct messages, and search that never leaks a room."""

import asyncio
import uuid

from chat.models import Message
from chat.services import moderation
from tests.conftest import make_room, make_user
from tests.integration.test_api import client_for, post
from tests.support import chat_socket, wait_until


def unread(server, user, slug: str) -> int:
    with client_for(server, user) as client:
        rooms = {room["slug"]: room for room in client.get("/api/rooms/").json()["rooms"]}
    return rooms[slug]["unread"]


async def send(sock, body: str) -> dict:
    await sock.send({"type": "message.send", "body": body, "client_id": uuid.uuid4().hex})
    return await sock.recv_type("ack")


async def test_read_state_moves_forward_only_and_reaches_the_users_other_sockets(web_a, web_b, worker, alice, bob,
                                                                                 room):
    async with (
        chat_socket(web_a, room.slug, alice.cookie) as tab_one,
        chat_socket(web_b, room.slug, alice.cookie) as tab_two,
        chat_socket(web_b, room.slug, bob.cookie) as b,
    ):
        acks = [await send(b, f"news {n}") for n in range(3)]
        await send(tab_one, "alice's own message does not count")
        wait_until(lambda: Message.objects.filter(room=room).count() == 4, 20, message="stored")
        assert unread(web_a, alice, room.slug) == 3
        assert unread(web_a, bob, room.slug) == 1

        await tab_one.send({"type": "read", "seq": acks[1]["seq"]})
        assert await tab_two.recv_type("read") == {"type": "read", "seq": acks[1]["seq"]}
        assert unread(web_b, alice, room.slug) == 1

        await tab_two.send({"type": "read", "seq": acks[0]["seq"]})  # backwards: ignored
        await tab_two.send({"type": "read", "seq": 10**12})  # past the newest: clamped
        clamped = await tab_one.recv_type("read")
        assert clamped["seq"] == acks[-1]["seq"] + 1  # alice's own message is the newest
        assert unread(web_a, alice, room.slug) == 0
        await b.send({"type": "ping"})
        await b.recv_type("pong")
        assert not [f for f in b.frames if f["type"] == "read"], "read state is the user's own"
        assert [f["seq"] for f in tab_one.frames if f["type"] == "read"] == [clamped["seq"]]


def test_direct_messages_are_one_private_room_per_pair(web_a, alice, bob):
    carol = make_user("carol")
    with client_for(web_a, alice) as a, client_for(web_a, bob) as b, client_for(web_a, carol) as c:
        first = post(a, "/api/dms/", {"username": bob.username})
        assert first.status_code == 201
        room = first.json()
        assert room["private"] is True
        again = post(b, "/api/dms/", {"username": alice.username})
        assert again.status_code == 200 and again.json()["slug"] == room["slug"]
        assert room["slug"] in [r["slug"] for r in a.get("/api/rooms/").json()["rooms"]]
        assert room["slug"] not in [r["slug"] for r in c.get("/api/rooms/").json()["rooms"]]
        assert c.get(f"/api/rooms/{room['slug']}/messages/").status_code == 404
        assert post(a, f"/api/rooms/{room['slug']}/members/", {"username": carol.username}).status_code == 403
        assert post(a, "/api/dms/", {"username": alice.username}).status_code == 400
        assert post(a, "/api/dms/", {"username": "nobody-" + uuid.uuid4().hex}).status_code == 404


async def test_search_finds_only_what_the_user_may_read_newest_first(web_a, worker, alice, bob, room):
    secret_room = make_room(bob, private=True)
    word = "zebra" + uuid.uuid4().hex[:8]
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_a, secret_room.slug,
                                                                              bob.cookie) as b:
        older = await send(a, f"the {word} crossed")
        newer = await send(a, f"another {word} here")
        hidden = await send(a, f"{word} to be hidden")
        await send(a, "nothing to see")
        secret = await send(b, f"secret {word}")
        deleted = await send(b, f"{word} regretted")
        await b.send({"type": "message.delete", "id": deleted["id"]})
        await b.recv_type("message.deleted")
    wait_until(lambda: Message.objects.filter(room__in=[room, secret_room]).count() == 6
               and Message.objects.filter(id=deleted["id"], deleted=True).exists(), 20, message="stored")
    staff, to_hide = make_user("staff", is_staff=True), Message.objects.select_related("room", "author").get(
        id=hidden["id"])
    await asyncio.to_thread(moderation.message_hide, actor=staff, message=to_hide)  # sync code, as in the admin

    with client_for(web_a, alice) as client_alice, client_for(web_a, bob) as client_bob:
        found = client_alice.get("/api/search/", params={"q": word}).json()["messages"]
        assert [m["id"] for m in found] == [newer["id"], older["id"]]  # not the private room's, not hidden
        assert found[0]["room"] == room.slug and word in found[0]["body"]

        found_bob = client_bob.get("/api/search/", params={"q": word}).json()["messages"]
        assert [m["id"] for m in found_bob] == [secret["id"], newer["id"], older["id"]]
        only_secret = client_bob.get("/api/search/", params={"q": word, "room": secret_room.slug}).json()
        assert [m["id"] for m in only_secret["messages"]] == [secret["id"]]
        assert client_alice.get("/api/search/", params={"q": word, "room": secret_room.slug}).json() == {
            "messages": []}
        assert client_alice.get("/api/search/", params={"q": word, "limit": 1}).json()["messages"][0]["id"] == \
            newer["id"]
        assert client_alice.get("/api/search/", params={"q": " "}).status_code == 400
    with client_for(web_a) as anonymous:
        assert anonymous.get("/api/search/", params={"q": word}).status_code == 401
