"""Privacy from staff (contract §9): being staff reads no DM or private room one is not in, on any
surface; a reported message is read, with a few around it, only by staff who may act on reports,
and each such view is in the moderation log; a view-only staff account changes nothing."""

import re
import uuid
from html.parser import HTMLParser

import httpx
from django.contrib.auth.models import Permission
from django.utils import timezone

from chat.models import ChatProfile, Membership, Message, ModerationAction, Report, Room
from chat.services import moderation
from chat.services.rooms import dm_open
from tests.conftest import make_room, make_user, session_cookie
from tests.integration.test_api import client_for
from tests.integration.test_permissions import socket_reads


def grant(user, *codenames: str) -> None:
    perms = Permission.objects.filter(content_type__app_label="chat", codename__in=codenames)
    assert perms.count() == len(codenames), codenames
    user.user_permissions.add(*perms)


def admin_client(server, user) -> httpx.Client:
    return httpx.Client(base_url=server.url, cookies={"sessionid": session_cookie(user)}, timeout=10)


class FormFields(HTMLParser):
    """What a browser would submit from a page's forms: inputs, checked boxes, selected options."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._select: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button", "file"):
            if attrs.get("type") != "checkbox" or "checked" in attrs:
                self.fields[name] = attrs.get("value") or ("on" if attrs.get("type") == "checkbox" else "")
        elif tag == "select" and name:
            self._select = name
            self.fields.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in attrs:
            self.fields[self._select] = attrs.get("value", "")

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def conversation(room, authors, count: int) -> list[Message]:
    word = "priv" + uuid.uuid4().hex[:12]
    return [Message.objects.create(room=room, seq=n, author=authors[n % len(authors)], body=f"{word}-{n:02d}",
                                   created_at=timezone.now()) for n in range(1, count + 1)]


async def test_staff_outside_a_dm_or_private_room_read_nothing_of_it(web_a, alice, bob):
    staff = make_user("staff", is_staff=True, is_superuser=True)
    dm, _ = dm_open(actor=alice, username=bob.username)
    private = make_room(alice, private=True)
    for room in (dm, private):
        (message,) = conversation(room, [alice], 1)
        word = message.body.split("-")[0]
        with client_for(web_a, staff) as c:
            assert room.slug not in [r["slug"] for r in c.get("/api/rooms/").json()["rooms"]]
            assert c.get(f"/api/rooms/{room.slug}/messages/").status_code == 404
            assert c.get("/api/search/", params={"q": word}).json() == {"messages": []}
            assert c.get("/api/search/", params={"q": word, "room": room.slug}).json() == {"messages": []}
            assert c.get(f"/rooms/{room.slug}/").status_code == 404
            listing = c.get("/admin/chat/message/", params={"q": word})
            assert listing.status_code == 200 and message.body not in listing.text
            assert c.get(f"/admin/chat/message/{message.pk}/change/").status_code in (302, 404)
        assert await socket_reads(web_a, room.slug, staff) is False


def test_a_moderator_reads_a_reported_dm_message_in_context_and_the_view_is_logged(web_a, alice, bob):
    moderator = make_user("moderator", is_staff=True)
    grant(moderator, "view_report", "change_report", "view_message", "change_message")
    dm, _ = dm_open(actor=alice, username=bob.username)
    messages = conversation(dm, [alice, bob], 11)
    reported = messages[5]  # seq 6: seqs 3..9 are its context
    report = Report.objects.create(message=reported, reporter=bob, reason="a threat")

    with admin_client(web_a, moderator) as client:
        page = client.get(f"/admin/chat/report/{report.pk}/change/")
        assert page.status_code == 200, page.text[:500]
        assert {m.seq for m in messages if m.body in page.text} == {3, 4, 5, 6, 7, 8, 9}
        word = reported.body.split("-")[0]
        listing = client.get("/admin/chat/message/", params={"q": word})
        assert [m.seq for m in messages if m.body in listing.text] == [6]  # the reported one, no other
        assert client.get(f"/admin/chat/message/{reported.pk}/change/").status_code == 200
        assert client.get(f"/admin/chat/message/{messages[0].pk}/change/").status_code in (302, 404)

    view = ModerationAction.objects.get(action="view", actor=moderator)
    assert (view.target_message_id, view.target_user) == (reported.pk, reported.author)
    assert f"report #{report.pk}" in view.reason

    # Staff who may only look at reports do not get the conversation, and leave no view behind.
    onlooker = make_user("onlooker", is_staff=True)
    grant(onlooker, "view_report", "view_message")
    with admin_client(web_a, onlooker) as client:
        assert client.get(f"/admin/chat/report/{report.pk}/change/").status_code in (302, 404)
        assert reported.body not in client.get("/admin/chat/report/").text
    assert not ModerationAction.objects.filter(actor=onlooker).exists()


def test_a_view_only_staff_account_cannot_ban_mute_hide_or_resolve(web_a, alice, bob, room):
    viewer = make_user("viewer", is_staff=True)
    grant(viewer, "view_chatprofile", "view_message", "view_report", "view_moderationaction")
    profile = moderation.profile_for(alice)
    (message,) = conversation(room, [alice], 1)
    report = Report.objects.create(message=message, reporter=bob, reason="spam")
    attempts = [("chatprofile", "ban", profile.pk), ("chatprofile", "mute_indefinitely", profile.pk),
                ("message", "hide_messages", message.pk), ("report", "hide_and_resolve", report.pk),
                ("report", "resolve", report.pk)]

    with admin_client(web_a, viewer) as client:
        for model, action, pk in attempts:
            page = client.get(f"/admin/chat/{model}/")
            assert page.status_code == 200, page.text[:500]
            assert f'value="{action}"' not in page.text, f"{action} is offered to a view-only account"
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            done = client.post(f"/admin/chat/{model}/", data={"action": action, "_selected_action": [str(pk)],
                                                                "index": "0", "csrfmiddlewaretoken": token})
            assert done.status_code in (200, 302, 403), (action, done.status_code)
        form = client.get(f"/admin/chat/chatprofile/{profile.pk}/change/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        edit = client.post(f"/admin/chat/chatprofile/{profile.pk}/change/",
                           data={"user": str(alice.pk), "banned": "on", "csrfmiddlewaretoken": token})
        assert edit.status_code == 403

    profile = ChatProfile.objects.get(pk=profile.pk)
    assert (profile.banned, profile.muted_until) == (False, None)
    assert not Message.objects.get(pk=message.pk).hidden
    assert not Report.objects.get(pk=report.pk).resolved
    assert not ModerationAction.objects.filter(actor=viewer).exists()


def test_staff_cannot_join_a_dm_or_make_it_public_in_the_admin(web_a, alice, bob):
    staff = make_user("staff", is_staff=True, is_superuser=True)
    dm, _ = dm_open(actor=alice, username=bob.username)
    with admin_client(web_a, staff) as client:
        page = client.get(f"/admin/chat/room/{dm.pk}/change/")
        assert page.status_code == 200
        form = FormFields(page.text).fields
        index = int(form["memberships-TOTAL_FORMS"])
        joined = {**form, "memberships-TOTAL_FORMS": str(index + 1), f"memberships-{index}-room": str(dm.pk),
                  f"memberships-{index}-user": str(staff.pk), f"memberships-{index}-role": "member",
                  f"memberships-{index}-joined_at_0": "2026-01-01", f"memberships-{index}-joined_at_1": "00:00:00"}
        assert client.post(f"/admin/chat/room/{dm.pk}/change/", data=joined).status_code in (200, 302)
        public = {k: v for k, v in form.items() if k != "private"}
        assert client.post(f"/admin/chat/room/{dm.pk}/change/", data=public).status_code == 200  # form error
    assert not Membership.objects.filter(room=dm, user=staff).exists()
    assert set(Room.objects.get(pk=dm.pk).members.all()) == {alice, bob}
    assert Room.objects.get(pk=dm.pk).private
