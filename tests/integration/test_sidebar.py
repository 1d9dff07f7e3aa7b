"""The sidebar's per-user stream (contract §9) across two web instances: `sidebar.activity` for a
message in another room of the user's sidebar, `sidebar.changed` when the set changes, the user
socket /ws/user/, and which rooms are in a user's sidebar."""

import uuid
from contextlib import AsyncExitStack, asynccontextmanager

import websockets

from chat.models import Membership
from tests.conftest import make_room, make_user, session_cookie
from tests.integration.test_api import client_for, post
from tests.integration.test_mentions import say
from tests.support import ChatSocket, chat_socket


@asynccontextmanager
async def user_socket(server, cookie: str | None, *, hello: bool = True):
    """/ws/user/: its first frame is `sidebar.hello`, then `sidebar.changed` once it watches the rooms."""
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/user/", origin=server.url,
                                  additional_headers=headers, open_timeout=10) as ws:
        client = ChatSocket(ws)
        if hello:
            first = await client.recv()
            assert first["type"] == "sidebar.hello", first
            await client.recv_type("sidebar.changed")
        yield client


async def watch(sock) -> None:
    """A room socket asks for its user's sidebar frames (the room page does), and waits until it has them."""
    await sock.send({"type": "sidebar.watch"})
    await sock.recv_type("sidebar.changed")


def csrf_headers(c) -> dict:
    return {"X-CSRFToken": c.cookies["csrftoken"], "Referer": str(c.base_url)}


async def test_a_message_in_room_b_reaches_a_member_in_room_c_on_the_other_instance(web_a, web_b, alice, bob):
    room_b, room_c = make_room(alice), make_room(alice)  # alice is a member of both
    async with chat_socket(web_a, room_c.slug, alice.cookie) as a_in_c:
        await watch(a_in_c)  # watching her sidebar's rooms from here on
        async with chat_socket(web_b, room_b.slug, bob.cookie) as b_in_b:
            await watch(b_in_b)
            plain = await say(b_in_b, "news in B")
            frame = await a_in_c.recv_type("sidebar.activity")
            assert frame == {"type": "sidebar.activity", "room": room_b.slug, "seq": plain["seq"], "mention": False}
            named = await say(b_in_b, f"news for @{alice.username}")
            frame = await a_in_c.recv_type("sidebar.activity")
            assert frame == {"type": "sidebar.activity", "room": room_b.slug, "seq": named["seq"], "mention": True}

            # Her own room's messages come as messages, never as sidebar frames; bob's own socket
            # gets none for his own messages.
            async with chat_socket(web_b, room_c.slug, bob.cookie) as b_in_c:
                await say(b_in_c, "in C")
                await a_in_c.recv_type("message")
                await say(b_in_b, "B again")
                frame = await a_in_c.recv_type("sidebar.activity")
                assert frame["room"] == room_b.slug
            assert not [f for f in a_in_c.frames if f["type"] == "sidebar.activity" and f["room"] == room_c.slug]
            assert not [f for f in b_in_b.frames if f["type"] == "sidebar.activity"]


async def test_the_user_socket_carries_sidebar_frames_only(web_a, web_b, alice, bob):
    room = make_room(alice)
    async with user_socket(web_a, alice.cookie) as a:
        async with chat_socket(web_b, room.slug, bob.cookie) as b:
            ack = await say(b, "hello")
            frame = await a.recv_type("sidebar.activity")
            assert (frame["room"], frame["seq"], frame["mention"]) == (room.slug, ack["seq"], False)
        await a.send({"type": "ping"})
        await a.recv_type("pong")
        await a.send({"type": "message.send", "body": "x", "client_id": "1"})
        assert (await a.recv_type("error"))["code"] == "invalid_frame"
        assert {f["type"] for f in a.frames} <= {"sidebar.hello", "sidebar.changed", "sidebar.activity", "pong",
                                                 "error"}
    async with user_socket(web_a, None, hello=False) as anonymous:
        assert await anonymous.close_code() == 4401


async def test_logout_closes_the_user_socket_with_4401(web_a, web_b):
    carol = make_user("carol")
    cookie = session_cookie(carol)
    async with user_socket(web_b, cookie) as sock:
        with client_for(web_a) as c:
            c.cookies.set("sessionid", cookie)
            c.cookies.set("csrftoken", uuid.uuid4().hex)
            response = c.post("/accounts/logout/", headers=csrf_headers(c))
            assert response.status_code in (200, 302), response.text
        assert await sock.close_code() == 4401


async def test_a_new_dm_and_being_added_or_removed_change_the_sidebar_live(web_a, web_b, alice, bob):
    carol = make_user("carol")
    async with user_socket(web_a, alice.cookie) as a:
        # bob opens a DM with alice on the other instance: it appears in her sidebar, live.
        with client_for(web_b, bob) as c:
            dm = post(c, "/api/dms/", {"username": alice.username}).json()["slug"]
        await a.recv_type("sidebar.changed")
        with client_for(web_a, alice) as c:
            entry = next(r for r in c.get("/api/rooms/").json()["rooms"] if r["slug"] == dm)
            assert (entry["joined"], entry["direct"], entry["dm_with"]) == (True, True, bob.username)
        # ... and its messages now come as sidebar frames: every one a mention (the DM rule).
        async with chat_socket(web_b, dm, bob.cookie) as b:
            ack = await say(b, "psst")
            frame = await a.recv_type("sidebar.activity")
            assert (frame["room"], frame["seq"], frame["mention"]) == (dm, ack["seq"], True)

        # carol adds alice to her private room, then removes her.
        private = make_room(carol, private=True)
        with client_for(web_b, carol) as c:
            assert post(c, f"/api/rooms/{private.slug}/members/", {"username": alice.username}).status_code == 201
            await a.recv_type("sidebar.changed")
            async with chat_socket(web_a, private.slug, session_cookie(carol)) as carol_in:
                ack = await say(carol_in, "welcome")
                frame = await a.recv_type("sidebar.activity")
                assert frame["room"] == private.slug
            removed = c.delete(f"/api/rooms/{private.slug}/members/{alice.username}/", headers=csrf_headers(c))
            assert removed.status_code == 204, removed.text
            await a.recv_type("sidebar.changed")


async def test_opening_a_public_room_puts_it_in_the_sidebar_without_making_a_member(web_a, web_b, alice, bob):
    room, unopened = make_room(alice), make_room(alice)
    async with user_socket(web_b, bob.cookie) as b_home:
        async with chat_socket(web_a, room.slug, bob.cookie):
            await b_home.recv_type("sidebar.changed")  # his other sockets learn of it
        with client_for(web_a, bob) as c:
            rooms = {r["slug"]: r for r in c.get("/api/rooms/").json()["rooms"]}
        assert rooms[room.slug]["joined"] is True and rooms[unopened.slug]["joined"] is False
        # Opened, not a member: were the room made private, he would not keep it.
        assert not Membership.objects.filter(room=room, user=bob).exists()
        # Messages there now reach his home page's socket.
        async with chat_socket(web_a, room.slug, alice.cookie) as a:
            ack = await say(a, "you joined")
        frame = await b_home.recv_type("sidebar.activity")
        assert (frame["room"], frame["seq"]) == (room.slug, ack["seq"])


async def test_reading_a_room_drops_its_counts_in_the_users_other_sidebars(web_a, web_b, alice, bob):
    room = make_room(alice)
    async with user_socket(web_b, alice.cookie) as home:
        async with chat_socket(web_a, room.slug, bob.cookie) as b:
            ack = await say(b, f"@{alice.username} read me")
        assert (await home.recv_type("sidebar.activity"))["mention"] is True
        async with chat_socket(web_a, room.slug, alice.cookie) as a:
            await a.send({"type": "read", "seq": ack["seq"]})
            frame = await home.recv_type("sidebar.read")
            assert frame == {"type": "sidebar.read", "room": room.slug, "seq": ack["seq"]}
            await a.send({"type": "ping"})
            await a.recv_type("pong")
            assert not [f for f in a.frames if f["type"] == "sidebar.read"], "its own room's socket gets `read`"


async def test_user_sockets_count_toward_the_socket_cap(web_a, web_b, alice, bob):
    room = make_room(alice)
    async with AsyncExitStack() as stack:
        for n in range(19):  # CHAT_MAX_SOCKETS_PER_USER's default is 20, across instances and kinds
            await stack.enter_async_context(chat_socket(web_a if n % 2 else web_b, room.slug, alice.cookie))
        async with user_socket(web_a, alice.cookie) as twentieth:
            async with user_socket(web_b, alice.cookie, hello=False) as extra:
                assert await extra.close_code() == 4429
            async with chat_socket(web_b, room.slug, alice.cookie, hello=False) as extra:
                assert await extra.close_code() == 4429
            await twentieth.send({"type": "ping"})
            await twentieth.recv_type("pong")
        async with user_socket(web_b, bob.cookie):  # another user is not counted
            pass


async def test_a_room_socket_that_does_not_ask_gets_only_the_rooms_frames(web_a, web_b, alice, bob):
    """A client speaking contract §4 alone (no sidebar.watch) gets no sidebar frames."""
    room_b, room_c = make_room(alice), make_room(alice)
    async with chat_socket(web_a, room_c.slug, alice.cookie) as a_in_c, \
            chat_socket(web_b, room_c.slug, alice.cookie) as watching:
        await watch(watching)
        async with chat_socket(web_b, room_b.slug, bob.cookie) as b_in_b:
            sent = await say(b_in_b, f"news for @{alice.username}")
        assert (await watching.recv_type("sidebar.activity"))["seq"] == sent["seq"]
        await a_in_c.send({"type": "ping"})
        await a_in_c.recv_type("pong")
        assert not [f for f in a_in_c.frames if f["type"].startswith("sidebar.")], a_in_c.frames
