"""Your rooms, your way (issue 22): a member leaves a room (a private room's sockets close like a
removed member's), the owner renames and archives a room, every socket of the room learns it live on
both instances, and an archived room refuses sends, edits and deletes with `room_archived`."""

import time
import uuid

from chat.models import Membership, ReadState
from tests.conftest import make_room, make_user, session_cookie
from tests.integration.test_access_end import browser, closed_soon, staff_cookie, still_open
from tests.support import chat_socket, unique, wait_until


def members_path(room, username: str) -> str:
    return f"/api/rooms/{room.slug}/members/{username}/"


async def test_a_member_leaves_a_private_room_its_sockets_close_and_it_leaves_their_list(web_a, web_b):
    owner, member = make_user("owner"), make_user("member")
    room, lobby = make_room(owner, private=True), make_room(owner)
    Membership.objects.create(room=room, user=member)
    ReadState.objects.create(room=room, user=member, seq=0)
    cookie, owner_cookie = session_cookie(member), session_cookie(owner)
    async with (
        chat_socket(web_a, room.slug, cookie) as on_a,
        chat_socket(web_b, room.slug, cookie) as on_b,
        chat_socket(web_b, lobby.slug, cookie) as in_lobby,
        chat_socket(web_a, room.slug, owner_cookie) as owners,
    ):
        with browser(web_a, cookie) as c:
            left = c.delete(members_path(room, member.username))
            assert left.status_code == 204, left.text
            gone = time.monotonic()
        assert await closed_soon(on_a, gone) == 4403
        assert await closed_soon(on_b, gone) == 4403
        await still_open(in_lobby)
        await still_open(owners)
    assert not Membership.objects.filter(room=room, user=member).exists()
    assert not ReadState.objects.filter(room=room, user=member).exists()
    with browser(web_b, cookie) as c:
        assert room.slug not in {r["slug"] for r in c.get("/api/rooms/").json()["rooms"]}
        again = c.delete(members_path(room, member.username))  # the room is out of reach now
        assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


async def test_leaving_a_public_room_keeps_it_readable_and_the_owner_and_dms_cannot_be_left(web_a, alice, bob):
    room = make_room(alice)
    Membership.objects.create(room=room, user=bob)
    async with chat_socket(web_a, room.slug, bob.cookie) as reading:
        with browser(web_a, bob.cookie) as c:
            assert c.delete(members_path(room, bob.username)).status_code == 204
            assert not Membership.objects.filter(room=room, user=bob).exists()
            not_member = c.delete(members_path(room, bob.username))
            assert not_member.status_code == 404 and "not a member" in not_member.json()["error"]["detail"]
            dm = c.post("/api/dms/", json={"username": alice.username})
            assert dm.status_code in (200, 201), dm.text
            refused = c.delete(f"/api/rooms/{dm.json()['slug']}/members/{bob.username}/")
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        await still_open(reading)  # a public room stays readable
    opener = make_user("opener")  # opened the public room only: joined through its read mark
    cookie = session_cookie(opener)
    async with chat_socket(web_a, room.slug, cookie) as opened:
        await still_open(opened)
        wait_until(lambda: ReadState.objects.filter(room=room, user=opener).exists(), message="the room opened")
    with browser(web_a, cookie) as c:
        assert c.delete(members_path(room, opener.username)).status_code == 204
    assert not ReadState.objects.filter(room=room, user=opener).exists()
    with browser(web_a, alice.cookie) as c:
        owner = c.delete(members_path(room, alice.username))
        assert owner.status_code == 403, owner.text
        assert owner.json()["error"]["code"] == "owner_cannot_leave" and "own" in owner.json()["error"]["detail"]
    assert Membership.objects.filter(room=room, user=alice).exists()


def test_only_the_owner_or_staff_rename_or_archive_and_the_input_is_checked(web_a, alice, bob):
    public, private = make_room(alice), make_room(alice, private=True)
    with browser(web_a, bob.cookie) as c:
        refused = c.patch(f"/api/rooms/{public.slug}/", json={"name": "mine now"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        hidden = c.patch(f"/api/rooms/{private.slug}/", json={"archived": True})
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
        assert c.patch(f"/api/rooms/no-{public.slug}/", json={"name": "x"}).status_code == 404
    with browser(web_a, alice.cookie) as c:
        for body in ({}, {"name": ""}, {"name": "x" * 121}, {"archived": "yes"}, {"name": 3}):
            invalid = c.patch(f"/api/rooms/{public.slug}/", json=body)
            assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid", body
        renamed = c.patch(f"/api/rooms/{public.slug}/", json={"name": "  Design  "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "Design" and renamed.json()["archived"] is False
    with browser(web_a, staff_cookie()) as staff:  # staff manage a private room they cannot read
        done = staff.patch(f"/api/rooms/{private.slug}/", json={"archived": True})
        assert done.status_code == 200 and done.json()["archived"] is True
    with httpx_anonymous(web_a) as anonymous:
        assert anonymous.patch(f"/api/rooms/{public.slug}/", json={"name": "x"}).status_code in (401, 403)


def httpx_anonymous(server):
    import httpx

    return httpx.Client(base_url=server.url, timeout=10)


async def test_rename_and_archive_reach_every_socket_and_an_archived_room_is_read_only(web_a, web_b, alice, bob):
    room = make_room(alice)
    async with chat_socket(web_a, room.slug, alice.cookie) as owner, chat_socket(web_b, room.slug, bob.cookie) as other:
        await owner.send({"type": "message.send", "body": "before", "client_id": uuid.uuid4().hex})
        sent = await owner.recv_type("ack")
        with browser(web_a, alice.cookie) as c:
            assert c.patch(f"/api/rooms/{room.slug}/", json={"name": "Renamed"}).status_code == 200
            for sock in (owner, other):
                frame = await sock.recv_type("room.updated", timeout=5)
                assert frame["room"] == {"slug": room.slug, "name": "Renamed", "archived": False}
            assert c.patch(f"/api/rooms/{room.slug}/", json={"archived": True}).status_code == 200
            for sock in (owner, other):
                frame = await sock.recv_type("room.updated", timeout=5)
                assert frame["room"] == {"slug": room.slug, "name": "Renamed", "archived": True}

        for sock in (owner, other):
            client_id = unique("c")
            await sock.send({"type": "message.send", "body": "after", "client_id": client_id})
            error = await sock.recv_type("error")
            assert error["code"] == "room_archived" and error["client_id"] == client_id, error
            assert "archived" in error["detail"]
        await owner.send({"type": "message.edit", "id": sent["id"], "body": "changed"})
        assert (await owner.recv_type("error"))["code"] == "room_archived"
        await owner.send({"type": "message.delete", "id": sent["id"]})
        assert (await owner.recv_type("error"))["code"] == "room_archived"

    async with chat_socket(web_b, room.slug, bob.cookie) as late:  # a socket opened after: refused too
        await late.send({"type": "message.send", "body": "late", "client_id": unique("c")})
        assert (await late.recv_type("error"))["code"] == "room_archived"
        with browser(web_b, bob.cookie) as c:
            listed = {r["slug"]: r for r in c.get("/api/rooms/").json()["rooms"]}
            assert listed[room.slug]["archived"] is True and listed[room.slug]["name"] == "Renamed"
            assert c.get("/").status_code == 200 and "Archived" in c.get("/").text
        with browser(web_a, alice.cookie) as c:
            assert c.patch(f"/api/rooms/{room.slug}/", json={"archived": False}).status_code == 200
        assert (await late.recv_type("room.updated", timeout=5))["room"]["archived"] is False
        await late.send({"type": "message.send", "body": "open again", "client_id": unique("c")})
        assert (await late.recv_type("ack", "error"))["type"] == "ack"
