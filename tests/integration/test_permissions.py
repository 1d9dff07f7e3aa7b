"""Who may read a room is one rule (permissions.readable_rooms), and every surface asks it: the room
list, history, search, the room page, the socket and the admin's message list agree for a member,
an outsider and staff, who read no private room they are not in (contract §9)."""

import uuid

import websockets
from django.utils import timezone

from chat import permissions
from chat.models import Membership, Message
from tests.conftest import make_room, make_user, session_cookie
from tests.integration.test_api import client_for
from tests.support import chat_socket


async def socket_reads(server, slug: str, user) -> bool:
    """True when the socket is greeted with hello; False when it is closed with 4403."""
    async with chat_socket(server, slug, session_cookie(user), hello=False) as ws:
        try:
            return (await ws.recv())["type"] == "hello"
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd.code == 4403, exc
            return False


async def test_every_surface_asks_the_one_read_rule(web_a):
    member = make_user("member")
    outsider = make_user("outsider")
    staff = make_user("staff", is_staff=True, is_superuser=True)
    staff_member = make_user("staffmember", is_staff=True, is_superuser=True)
    room = make_room(member, private=True)
    Membership.objects.create(room=room, user=staff_member)
    word = "perm" + uuid.uuid4().hex[:12]
    Message.objects.create(room=room, seq=1, author=member, body=f"the {word} plan", created_at=timezone.now())

    for user, may_read in ((member, True), (outsider, False), (staff, False), (staff_member, True)):
        assert permissions.readable_rooms(user).filter(pk=room.pk).exists() is may_read
        with client_for(web_a, user) as c:
            listed = [r["slug"] for r in c.get("/api/rooms/").json()["rooms"]]
            assert (room.slug in listed) is may_read, user
            history = c.get(f"/api/rooms/{room.slug}/messages/")
            assert history.status_code == (200 if may_read else 404), user
            found = c.get("/api/search/", params={"q": word}).json()["messages"]
            assert bool(found) is may_read, user
            assert c.get(f"/rooms/{room.slug}/").status_code == (200 if may_read else 404), user
            if user.is_staff:
                changelist = c.get("/admin/chat/message/", params={"q": word})
                assert changelist.status_code == 200
                assert (f"the {word} plan" in changelist.text) is may_read  # not the search box
        assert await socket_reads(web_a, room.slug, user) is may_read, user
