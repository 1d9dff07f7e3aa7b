"""Mentions (contract §9) through real web instances and the worker: who counts as mentioned, the
DM rule, edits, GET /api/mentions/ and the mention counts of /api/rooms/."""

import uuid

from chat.models import Mention, Message
from tests.conftest import make_room, make_user, session_cookie
from tests.integration.test_api import client_for, post
from tests.support import chat_socket, wait_until


async def say(sock, body: str) -> dict:
    """Send a message and wait for its ack."""
    client_id = uuid.uuid4().hex
    await sock.send({"type": "message.send", "body": body, "client_id": client_id})
    while True:
        ack = await sock.recv_type("ack")
        if ack["client_id"] == client_id:
            return ack


def mentions_of(server, user) -> list[dict]:
    with client_for(server, user) as c:
        response = c.get("/api/mentions/")
        assert response.status_code == 200, response.text
        return response.json()["messages"]


def room_entry(server, user, slug: str) -> dict:
    with client_for(server, user) as c:
        return next(room for room in c.get("/api/rooms/").json()["rooms"] if room["slug"] == slug)


def stored(message_id: str, *, edited: bool = False) -> None:
    wait_until(lambda: Message.objects.filter(id=message_id, **({"edited_at__isnull": False} if edited else {}))
               .exists(), 20, message=f"message {message_id} stored")


async def test_who_counts_as_mentioned(web_a, web_b, worker, alice, bob):
    carol, dave = make_user("carol"), make_user("dave")
    public = make_room(alice)
    private = make_room(alice, private=True)
    with client_for(web_a, alice) as c:
        assert post(c, f"/api/rooms/{private.slug}/members/", {"username": bob.username}).status_code == 201
    async with chat_socket(web_a, public.slug, alice.cookie) as a_pub, \
            chat_socket(web_b, private.slug, alice.cookie) as a_priv:
        # Public: anyone may read it, so bob and carol are mentioned; alice naming herself is not a
        # mention, nor is an e-mail address, nor a name of nobody.
        in_public = await say(a_pub, f"@{bob.username}, @{carol.username}. @{alice.username} "
                                     f"mail{bob.username}@example.com @nobody-{uuid.uuid4().hex[:6]}")
        # Private: bob is a member; dave may not read the room, so naming him mentions nobody.
        in_private = await say(a_priv, f"hey @{bob.username} and @{dave.username}")
    for ack in (in_public, in_private):
        stored(ack["id"])
    wait_until(lambda: Mention.objects.filter(message_id__in=[in_public["id"], in_private["id"]]).count() == 3, 20,
               message="the worker's mention rows")
    assert {m["id"] for m in mentions_of(web_a, bob)} == {in_public["id"], in_private["id"]}
    assert [m["id"] for m in mentions_of(web_b, carol)] == [in_public["id"]]
    assert mentions_of(web_a, dave) == [] and mentions_of(web_a, alice) == []
    newest = mentions_of(web_a, bob)
    assert newest[0]["id"] == in_private["id"], "newest first"
    assert set(newest[0]) >= {"id", "room", "seq", "author", "body", "created_at", "edited_at", "client_id"}
    assert newest[0]["room"] == private.slug and newest[0]["author"]["username"] == alice.username

    # /api/rooms/: mentions after the read mark; reading the room clears them.
    entry = room_entry(web_a, bob, private.slug)
    assert (entry["unread"], entry["mentions"], entry["joined"], entry["direct"]) == (1, 1, True, False)
    bob.cookie = session_cookie(bob)
    async with chat_socket(web_b, private.slug, bob.cookie) as b:
        await b.send({"type": "read", "seq": in_private["seq"]})
        await b.send({"type": "ping"})
        await b.recv_type("pong")
    wait_until(lambda: room_entry(web_a, bob, private.slug)["mentions"] == 0, 10, message="mentions read")
    assert room_entry(web_a, bob, private.slug)["unread"] == 0

    # Removed from the private room: its mentions are no longer listed for bob.
    with client_for(web_a, alice) as c:
        removed = c.delete(f"/api/rooms/{private.slug}/members/{bob.username}/",
                           headers={"X-CSRFToken": c.cookies["csrftoken"], "Referer": str(c.base_url)})
        assert removed.status_code == 204, removed.text
    assert [m["id"] for m in mentions_of(web_a, bob)] == [in_public["id"]]


async def test_every_message_of_the_other_member_of_a_dm_is_a_mention(web_a, web_b, worker, alice, bob):
    with client_for(web_a, alice) as c:
        dm = post(c, "/api/dms/", {"username": bob.username}).json()["slug"]
    async with chat_socket(web_a, dm, alice.cookie) as a, chat_socket(web_b, dm, bob.cookie) as b:
        acks = [await say(a, "no name in this one"), await say(a, "nor in this")]
        answer = await say(b, "bob's own message")
    for ack in (*acks, answer):
        stored(ack["id"])
    wait_until(lambda: len(mentions_of(web_a, bob)) == 2, 20, message="bob's DM mentions")
    assert [m["id"] for m in mentions_of(web_a, bob)] == [acks[1]["id"], acks[0]["id"]]
    wait_until(lambda: len(mentions_of(web_a, alice)) == 1, 20, message="alice's DM mention")
    entry = room_entry(web_b, bob, dm)
    assert (entry["mentions"], entry["unread"], entry["direct"], entry["dm_with"]) == (2, 2, True, alice.username)
    assert room_entry(web_a, alice, dm)["dm_with"] == bob.username


async def test_an_edit_re_derives_the_mentions_and_a_deleted_message_is_not_listed(web_a, worker, alice, bob):
    carol = make_user("carol")
    room = make_room(alice)
    async with chat_socket(web_a, room.slug, alice.cookie) as a:
        ack = await say(a, f"ping @{bob.username}")
        stored(ack["id"])
        wait_until(lambda: len(mentions_of(web_a, bob)) == 1, 20, message="bob mentioned")
        await a.send({"type": "message.edit", "id": ack["id"], "body": f"ping @{carol.username} instead"})
        await a.recv_type("message.edited")
        stored(ack["id"], edited=True)
        wait_until(lambda: len(mentions_of(web_a, carol)) == 1, 20, message="carol mentioned after the edit")
        assert mentions_of(web_a, bob) == []
        assert mentions_of(web_a, carol)[0]["body"] == f"ping @{carol.username} instead"
        await a.send({"type": "message.delete", "id": ack["id"]})
        await a.recv_type("message.deleted")
    wait_until(lambda: Message.objects.filter(id=ack["id"], deleted=True).exists(), 20, message="delete stored")
    assert mentions_of(web_a, carol) == []
    assert room_entry(web_a, carol, room.slug)["mentions"] == 0


def test_mentions_limit_and_login(web_a, alice):
    with client_for(web_a) as anonymous:
        assert anonymous.get("/api/mentions/").status_code == 401
    with client_for(web_a, alice) as c:
        for bad in ("0", "101", "x"):
            response = c.get(f"/api/mentions/?limit={bad}")
            assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
        assert c.get("/api/mentions/?limit=100").json() == {"messages": []}


async def test_a_blocked_users_mentions_do_not_count(web_a, web_b, worker, alice, bob):
    room = make_room(alice)
    with client_for(web_a, alice) as c:
        assert post(c, "/api/blocks/", {"username": bob.username}).status_code == 201
    other = make_room(alice)
    async with chat_socket(web_a, other.slug, alice.cookie) as watching, \
            chat_socket(web_b, room.slug, bob.cookie) as b:
        await watching.send({"type": "sidebar.watch"})  # as the room page does
        # alice's socket in another room watches this one once she has opened it: its second
        # sidebar.changed (the first answers its own watch).
        async with chat_socket(web_a, room.slug, alice.cookie):
            pass
        while sum(frame["type"] == "sidebar.changed" for frame in watching.frames) < 2:
            await watching.recv(10)
        blocked = await say(b, f"@{alice.username} are you there?")
        live = await watching.recv_type("sidebar.activity")
        assert (live["room"], live["seq"], live["mention"]) == (room.slug, blocked["seq"], False)
    stored(blocked["id"])
    wait_until(lambda: Mention.objects.filter(message_id=blocked["id"]).exists(), 20, message="the mention row")
    # Stored as a mention (an unblock brings it back), counted nowhere while the block stands.
    assert mentions_of(web_a, alice) == []
    entry = room_entry(web_b, alice, room.slug)
    assert (entry["unread"], entry["mentions"]) == (1, 0)
    with client_for(web_a, alice) as c:
        gone = c.delete(f"/api/blocks/{bob.username}/",
                        headers={"X-CSRFToken": c.cookies["csrftoken"], "Referer": str(c.base_url)})
        assert gone.status_code == 204, gone.text
    assert [m["id"] for m in mentions_of(web_a, alice)] == [blocked["id"]]
    assert room_entry(web_b, alice, room.slug)["mentions"] == 1
