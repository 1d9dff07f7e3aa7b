"""Blocking (issue 22): a blocked user cannot open a DM with the blocker or write in the one they have
(`blocked`, live on every instance), while rooms they share are unchanged; `blocked_user_ids` is the
selector mention counting leaves the blocked users out with."""

import httpx

from chat.services.blocks import blocked_user_ids
from tests.conftest import make_room, make_user, session_cookie
from tests.integration.test_access_end import browser
from tests.support import chat_socket, unique


async def send(sock, body: str) -> dict:
    """Send a message; its ack or the error about it."""
    client_id = unique("c")
    await sock.send({"type": "message.send", "body": body, "client_id": client_id})
    while True:
        frame = await sock.recv_type("ack", "error")
        if frame.get("client_id") == client_id:
            return frame


async def received(sock, body: str) -> None:
    """The socket got a message with this body (seen already, or the next ones)."""
    while not any(f["type"] == "message" and f["body"] == body for f in sock.frames):
        await sock.recv_type("message")


async def test_a_blocked_user_cannot_message_the_blocker_and_shared_rooms_are_unchanged(web_a, web_b, alice, bob):
    shared = make_room(alice)
    with browser(web_b, bob.cookie) as b:
        dm = b.post("/api/dms/", json={"username": alice.username}).json()["slug"]
    async with (
        chat_socket(web_b, dm, bob.cookie) as bob_dm,
        chat_socket(web_a, dm, alice.cookie) as alice_dm,
        chat_socket(web_a, shared.slug, alice.cookie) as alice_room,
        chat_socket(web_b, shared.slug, bob.cookie) as bob_room,
    ):
        with browser(web_a, alice.cookie) as a:
            created = a.post("/api/blocks/", json={"username": bob.username})
            assert created.status_code == 201 and created.json() == {"username": bob.username}
            assert a.post("/api/blocks/", json={"username": bob.username}).status_code == 200  # again: no change
            assert [x["username"] for x in a.get("/api/blocks/").json()["blocks"]] == [bob.username]
            assert blocked_user_ids(alice) == {bob.pk} and blocked_user_ids(bob) == set()

            assert (await bob_dm.recv_type("dm.state", timeout=5))["blocked"] is True
            refused = await send(bob_dm, "hello?")
            assert refused["type"] == "error" and refused["code"] == "blocked", refused
            with browser(web_b, bob.cookie) as b:
                opened = b.post("/api/dms/", json={"username": alice.username})
                assert opened.status_code == 403 and opened.json()["error"]["code"] == "blocked", opened.text
                assert alice.username in opened.json()["error"]["detail"]
            async with chat_socket(web_a, dm, bob.cookie) as later:  # refused from the start on a new socket
                assert (await send(later, "again"))["code"] == "blocked"
            # The blocker may still open and write in the DM (blocking is one-way).
            assert a.post("/api/dms/", json={"username": bob.username}).status_code == 200
            assert (await send(alice_dm, "bye"))["type"] == "ack"
            await received(bob_dm, "bye")

            # A room both are in: each still sees the other's messages.
            assert (await send(bob_room, "from bob"))["type"] == "ack"
            await received(alice_room, "from bob")
            assert (await send(alice_room, "from alice"))["type"] == "ack"
            await received(bob_room, "from alice")

            assert a.delete(f"/api/blocks/{bob.username}/").status_code == 204
            missing = a.delete(f"/api/blocks/{bob.username}/")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await bob_dm.recv_type("dm.state", timeout=5))["blocked"] is False
        assert (await send(bob_dm, "friends again"))["type"] == "ack"
    assert blocked_user_ids(alice.pk) == set()


def test_blocking_checks_its_input(web_a, alice):
    with browser(web_a, alice.cookie) as a:
        self_block = a.post("/api/blocks/", json={"username": alice.username})
        assert self_block.status_code == 400 and self_block.json()["error"]["code"] == "invalid"
        unknown = a.post("/api/blocks/", json={"username": unique("nobody")})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        assert a.post("/api/blocks/", json={"name": "x"}).status_code == 400
        assert a.get("/api/blocks/").json() == {"blocks": []}
    with httpx.Client(base_url=web_a.url, timeout=10) as anonymous:
        assert anonymous.get("/api/blocks/").status_code == 401


def test_a_block_without_a_dm_refuses_opening_one(web_a):
    carol, dave = make_user("carol"), make_user("dave")
    with browser(web_a, session_cookie(carol)) as c:
        assert c.post("/api/blocks/", json={"username": dave.username}).status_code == 201
    with browser(web_a, session_cookie(dave)) as d:
        assert d.post("/api/dms/", json={"username": carol.username}).status_code == 403
