"""Access ends everywhere at once (contract §9): logout, a new password (the user's own or one set by
staff), removal from a private room (API and admin inline) and a room made private close the affected
sockets on both instances within about a second, and leave everyone else's open."""

import re
import secrets
import time
from html.parser import HTMLParser

import httpx
from django.contrib.auth import get_user_model

from chat.models import Membership
from tests.conftest import make_room, make_user, session_cookie
from tests.support import chat_socket, unique

SOON = 1.5  # "within about a second", with room for two busy shared cores


def user_with_password(prefix: str):
    password = "pw-" + secrets.token_hex(8)
    user = get_user_model().objects.create_user(username=unique(prefix), password=password)
    user.password_plain = password
    return user


def staff_cookie() -> str:
    return session_cookie(make_user("staff", is_staff=True, is_superuser=True))


def browser(server, cookie: str) -> httpx.Client:
    """A logged-in client whose unsafe requests pass the CSRF check (cookie and header agree)."""
    token = secrets.token_hex(16)
    return httpx.Client(base_url=server.url, timeout=10, cookies={"sessionid": cookie, "csrftoken": token},
                        headers={"X-CSRFToken": token})


async def closed_soon(sock, since: float) -> int:
    return await sock.close_code(timeout=max(0.05, SOON - (time.monotonic() - since)))


async def still_open(sock) -> None:
    await sock.send({"type": "ping"})
    await sock.recv_type("pong", timeout=5)


class FormFields(HTMLParser):
    """The fields a browser would submit from a page's form: inputs, checked boxes, selects, textareas."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._select = self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") not in ("checkbox", "radio") or "checked" in a:
                self.fields[name] = a.get("value") or ("on" if a.get("type") == "checkbox" else "")
        elif tag == "select" and name:
            self._select = name
            self.fields.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.fields[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.fields[self._textarea] += data


def admin_change(server, cookie: str, path: str, change) -> None:
    """Load an admin change form, let `change` edit its fields, save it as a browser would."""
    with httpx.Client(base_url=server.url, timeout=10, cookies={"sessionid": cookie}) as client:
        page = client.get(path)
        assert page.status_code == 200, page.text[:500]
        form = FormFields()
        form.feed(page.text)
        fields = {k: v for k, v in form.fields.items() if "__prefix__" not in k}
        change(fields)
        done = client.post(path, data=fields)
        assert done.status_code == 302, re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', done.text, re.S)


async def test_logout_closes_that_sessions_sockets_on_every_instance(web_a, web_b, room):
    user = make_user("leaver")
    ending, other = session_cookie(user), session_cookie(user)
    async with (
        chat_socket(web_a, room.slug, ending) as on_a,
        chat_socket(web_b, room.slug, ending) as on_b,
        chat_socket(web_b, room.slug, other) as other_session,
    ):
        with browser(web_a, ending) as client:
            assert client.post("/accounts/logout/").status_code == 302
        logged_out = time.monotonic()
        assert await closed_soon(on_a, logged_out) == 4401
        assert await closed_soon(on_b, logged_out) == 4401
        await still_open(other_session)  # the user's other session was not logged out
    async with chat_socket(web_b, room.slug, ending, hello=False) as again:
        assert await again.close_code() == 4401


async def test_a_new_password_closes_the_sockets_of_every_session_signed_with_the_old_one(web_a, web_b, room):
    user = user_with_password("changer")
    changing, other = session_cookie(user), session_cookie(user)
    bystander = session_cookie(make_user("bystander"))
    async with (
        chat_socket(web_a, room.slug, changing) as own,
        chat_socket(web_b, room.slug, other) as elsewhere,
        chat_socket(web_b, room.slug, bystander) as unaffected,
    ):
        with browser(web_a, changing) as client:
            new = "pw-" + secrets.token_hex(8)
            done = client.post("/accounts/password_change/", data={
                "old_password": user.password_plain, "new_password1": new, "new_password2": new})
            assert done.status_code == 302 and "password_change/done" in done.headers["location"], done.text[:500]
            changed = time.monotonic()
            renewed = done.cookies["sessionid"]  # update_session_auth_hash kept this browser logged in
        assert await closed_soon(own, changed) == 4401
        assert await closed_soon(elsewhere, changed) == 4401
        await still_open(unaffected)
    async with chat_socket(web_b, room.slug, renewed) as after:  # signed with the new password: welcome
        await still_open(after)
    async with chat_socket(web_a, room.slug, other, hello=False) as stale:
        assert await stale.close_code() == 4401


async def test_a_password_set_by_staff_closes_the_users_sockets_on_every_instance(web_a, web_b, room):
    user = make_user("reset")
    cookie = session_cookie(user)
    async with chat_socket(web_a, room.slug, cookie) as on_a, chat_socket(web_b, room.slug, cookie) as on_b:
        new = "pw-" + secrets.token_hex(8)
        admin_change(web_b, staff_cookie(), f"/admin/auth/user/{user.pk}/password/",
                     lambda fields: fields.update(password1=new, password2=new))
        changed = time.monotonic()
        assert await closed_soon(on_a, changed) == 4401
        assert await closed_soon(on_b, changed) == 4401


async def test_a_removed_member_loses_the_private_room_at_once_and_keeps_the_others(web_a, web_b):
    owner, member, other_member, outsider = (make_user(p) for p in ("owner", "member", "member2", "outsider"))
    room, lobby = make_room(owner, private=True), make_room(owner)
    Membership.objects.create(room=room, user=member)
    Membership.objects.create(room=room, user=other_member)
    cookie = session_cookie(member)
    path = f"/api/rooms/{room.slug}/members/"
    with browser(web_a, session_cookie(other_member)) as c:  # a member who is not the owner
        refused = c.delete(path + outsider.username + "/")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    with browser(web_a, session_cookie(outsider)) as c:  # cannot see the room at all
        assert c.delete(path + member.username + "/").status_code == 404
    with browser(web_a, session_cookie(owner)) as c:
        for missing in (f"/api/rooms/no-{room.slug}/members/{member.username}/", path + "nobody-" + unique("x") + "/",
                        path + outsider.username + "/"):
            response = c.delete(missing)
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", missing
        assert c.delete(path + owner.username + "/").status_code == 403  # the owner stays

        async with (
            chat_socket(web_a, room.slug, cookie) as on_a,
            chat_socket(web_b, room.slug, cookie) as on_b,
            chat_socket(web_b, lobby.slug, cookie) as in_lobby,
            chat_socket(web_a, room.slug, session_cookie(other_member)) as stays,
        ):
            removed = c.delete(path + member.username + "/")
            assert removed.status_code == 204 and removed.content == b""
            gone = time.monotonic()
            assert await closed_soon(on_a, gone) == 4403
            assert await closed_soon(on_b, gone) == 4403
            await still_open(in_lobby)  # only the room they lost
            await still_open(stays)
        async with chat_socket(web_a, room.slug, cookie, hello=False) as again:
            assert await again.close_code() == 4403
        assert not Membership.objects.filter(room=room, user=member).exists()

    with browser(web_b, staff_cookie()) as staff:  # staff may remove members too
        assert staff.delete(path + other_member.username + "/").status_code == 204


async def test_a_membership_deleted_in_the_admin_inline_ends_access(web_a, web_b):
    owner, member = make_user("owner"), make_user("member")
    room = make_room(owner, private=True)
    membership = Membership.objects.create(room=room, user=member)
    cookie = session_cookie(member)

    def delete_member(fields: dict) -> None:
        row = next(k[: -len("-id")] for k, v in fields.items() if k.endswith("-id") and v == str(membership.pk))
        fields[f"{row}-DELETE"] = "on"

    async with chat_socket(web_a, room.slug, cookie) as on_a, chat_socket(web_b, room.slug, cookie) as on_b:
        admin_change(web_a, staff_cookie(), f"/admin/chat/room/{room.pk}/change/", delete_member)
        gone = time.monotonic()
        assert await closed_soon(on_a, gone) == 4403
        assert await closed_soon(on_b, gone) == 4403
    assert not Membership.objects.filter(pk=membership.pk).exists()


async def test_a_room_made_private_closes_the_sockets_of_non_members_only(web_a, web_b):
    owner, member, outsider = make_user("owner"), make_user("member"), make_user("outsider")
    room = make_room(owner)
    Membership.objects.create(room=room, user=member)
    outsider_cookie = session_cookie(outsider)
    async with (
        chat_socket(web_a, room.slug, outsider_cookie) as out_a,
        chat_socket(web_b, room.slug, outsider_cookie) as out_b,
        chat_socket(web_a, room.slug, session_cookie(owner)) as owner_sock,
        chat_socket(web_b, room.slug, session_cookie(member)) as member_sock,
    ):
        admin_change(web_b, staff_cookie(), f"/admin/chat/room/{room.pk}/change/",
                     lambda fields: fields.update(private="on"))
        private = time.monotonic()
        assert await closed_soon(out_a, private) == 4403
        assert await closed_soon(out_b, private) == 4403
        await still_open(owner_sock)
        await still_open(member_sock)
    async with chat_socket(web_a, room.slug, outsider_cookie, hello=False) as again:
        assert await again.close_code() == 4403
