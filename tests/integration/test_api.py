"""The HTTP JSON API (contract §3) through a real web instance."""

import secrets

import httpx
import pytest

from chat.models import Message
from tests.conftest import make_room, make_user, session_cookie
from tests.support import chat_socket, unique, wait_until


def client_for(server, user=None) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=10)
    if user is not None:
        client.cookies.set("sessionid", session_cookie(user))
        # Django accepts a CSRF secret of our own choosing, as long as cookie and header agree.
        client.cookies.set("csrftoken", secrets.token_hex(16))
    return client


def post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    return client.post(path, json=body, headers={"X-CSRFToken": client.cookies.get("csrftoken", ""),
                                                 "Referer": str(client.base_url)})


def test_not_logged_in_gets_json_401(web_a):
    with client_for(web_a) as anonymous:
        for path in ("/api/rooms/", "/api/rooms/lobby/messages/"):
            response = anonymous.get(path)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "not_authenticated"


def test_create_list_and_add_members(web_a):
    owner, friend, stranger = make_user("owner"), make_user("friend"), make_user("stranger")
    with client_for(web_a, owner) as c:
        slug = unique("team")
        created = post(c, "/api/rooms/", {"name": "Team room", "private": True, "slug": slug})
        assert created.status_code == 201
        assert created.json() == {"slug": slug, "name": "Team room", "private": True, "archived": False,
                                  "last_seq": 0}
        assert post(c, "/api/rooms/", {"name": "Again", "private": False, "slug": slug}).status_code == 409
        assert post(c, "/api/rooms/", {"name": "", "private": False}).status_code == 400
        assert post(c, "/api/rooms/", {"name": "x", "private": "yes"}).status_code == 400
        assert post(c, f"/api/rooms/{slug}/members/", {"username": "nobody-" + slug}).status_code == 404
        assert post(c, f"/api/rooms/{slug}/members/", {"username": friend.username}).status_code == 201
        assert slug in [r["slug"] for r in c.get("/api/rooms/").json()["rooms"]]
    with client_for(web_a, friend) as c:
        assert slug in [r["slug"] for r in c.get("/api/rooms/").json()["rooms"]]
        assert post(c, f"/api/rooms/{slug}/members/", {"username": stranger.username}).status_code == 403
    with client_for(web_a, stranger) as c:
        assert slug not in [r["slug"] for r in c.get("/api/rooms/").json()["rooms"]]
        assert c.get(f"/api/rooms/{slug}/messages/").status_code == 404


def test_unsafe_methods_need_the_csrf_header(web_a):
    with client_for(web_a, make_user()) as c:
        response = c.post("/api/rooms/", json={"name": "x", "private": False})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "csrf_failed"


@pytest.mark.usefixtures("worker")
async def test_history_pages_by_seq(web_a):
    author = make_user("author")
    author.cookie = session_cookie(author)
    room = make_room(author)
    async with chat_socket(web_a, room.slug, author.cookie) as sock:
        acks = []
        for n in range(12):
            await sock.send({"type": "message.send", "body": f"n{n}", "client_id": f"h{n}"})
            acks.append(await sock.recv_type("ack"))
        await sock.send({"type": "message.delete", "id": acks[5]["id"]})
        await sock.recv_type("message.deleted")
    wait_until(lambda: Message.objects.filter(room=room, deleted=True).count() == 1, 15, message="stored")
    seqs = [a["seq"] for a in acks]
    visible = [s for s in seqs if s != seqs[5]]
    with client_for(web_a, author) as c:
        newest = c.get(f"/api/rooms/{room.slug}/messages/", params={"limit": 4}).json()
        assert [m["seq"] for m in newest["messages"]] == visible[-4:] and newest["has_more"] is True
        older = c.get(f"/api/rooms/{room.slug}/messages/", params={"limit": 4, "before": visible[-4]}).json()
        assert [m["seq"] for m in older["messages"]] == visible[-8:-4]
        after = c.get(f"/api/rooms/{room.slug}/messages/", params={"after": seqs[0], "limit": 3}).json()
        assert [m["seq"] for m in after["messages"]] == visible[1:4] and after["has_more"] is True
        everything = c.get(f"/api/rooms/{room.slug}/messages/", params={"limit": 200}).json()
        assert [m["seq"] for m in everything["messages"]] == visible and everything["has_more"] is False
        message = everything["messages"][0]
        assert set(message) == {"id", "room", "seq", "author", "body", "created_at", "edited_at", "client_id",
                                "rev", "reply_to", "reactions", "attachments", "reply_count"}
        assert (message["reply_to"], message["reactions"], message["attachments"]) == (None, [], [])
        assert message["created_at"].endswith("Z")
        assert c.get(f"/api/rooms/{room.slug}/messages/", params={"limit": 0}).status_code == 400
        assert c.get(f"/api/rooms/{room.slug}/messages/", params={"after": "x"}).status_code == 400
        listed = {r["slug"]: r for r in c.get("/api/rooms/").json()["rooms"]}
        assert listed[room.slug]["last_seq"] == seqs[-1]


def test_health_and_readiness(web_a):
    with client_for(web_a) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "kafka": "ok"}


def test_every_response_carries_a_request_id(web_a):
    with client_for(web_a) as client:
        assert len(client.get("/healthz").headers["x-request-id"]) == 32
        assert client.get("/healthz", headers={"X-Request-ID": "from-the-balancer"}).headers["x-request-id"] == \
            "from-the-balancer"


def test_the_room_list_answers_with_a_room_of_twenty_thousand_messages(web_a):
    """The list's last seq and unread count come from the (room, seq) index, not from grouping every
    message (that took minutes for a room this size, past the client's 10 s timeout)."""
    from tests.integration.test_replay import store_history

    owner, reader = make_user("owner"), make_user("reader")
    room = make_room(owner)
    store_history(room, owner, 20_000)
    with client_for(web_a, reader) as c:
        listed = {r["slug"]: r for r in c.get("/api/rooms/").json()["rooms"]}
    assert listed[room.slug]["last_seq"] == 20_000
    assert listed[room.slug]["unread"] == 20_000
