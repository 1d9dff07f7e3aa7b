"""Moderation where staff look (issue 26): ban, mute and unmute from the user list, a user's page and
the message list, each asking first with an optional reason; acting on a report from its page; the
moderation desk; a view-only account that sees the desk but is offered no action and cannot run
one; a chat profile for every user. Against the real stack: the admin in the test process (Django's
test client) or on a daphne instance, sockets on both instances."""

import importlib
import re
import time
import uuid

import httpx
from django.apps import apps
from django.test import Client
from django.utils import timezone

from chat import permissions
from chat.models import ChatProfile, Message, ModerationAction, Report
from chat.services.rooms import dm_open
from tests.conftest import make_room, make_user, session_cookie
from tests.integration.test_staff_privacy import grant
from tests.support import chat_socket

ACT_LINK = re.compile(r'href="[^"]*/(act|moderate)/[a-z_]+/"')


def staff_client(user) -> Client:
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def superuser():
    return make_user("staff", is_staff=True, is_superuser=True)


def message_in(room, author, body: str = "") -> Message:
    seq = (Message.objects.filter(room=room).order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
    return Message.objects.create(room=room, seq=seq, author=author, body=body or f"msg-{uuid.uuid4().hex[:10]}",
                                  created_at=timezone.now())


def confirm(client: Client, url: str, data: dict, reason: str):
    """Run a list action or a page's button the way a person does: the confirmation page, then yes."""
    asked = client.post(url, data) if data else client.get(url)
    assert asked.status_code == 200, asked.content[:500]
    assert b'name="reason"' in asked.content and b'name="confirm"' in asked.content
    done = client.post(url, {**data, "confirm": "yes", "reason": reason})
    assert done.status_code == 302, done.content[:500]
    return done


def test_a_new_user_has_a_chat_profile_and_the_migration_gives_existing_users_one():
    assert ChatProfile.objects.filter(user=make_user("fresh"), banned=False, muted_until=None).exists()

    older = make_user("older")
    ChatProfile.objects.filter(user=older).delete()  # as a user created before 0013 was
    migration = importlib.import_module("chat.migrations.0013_chat_profile_for_every_user")
    migration.create_profiles(apps, None)
    assert ChatProfile.objects.filter(user=older).exists()
    migration.create_profiles(apps, None)  # a second run changes nothing
    assert ChatProfile.objects.filter(user=older).count() == 1


def test_signup_through_the_form_creates_the_profile():
    name = f"signup-{uuid.uuid4().hex[:8]}"
    address = f"10.26.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"  # an address of its own: no throttle
    response = Client(HTTP_HOST="localhost", REMOTE_ADDR=address).post(
        "/accounts/signup/", {"username": name, "password1": "a-long-pass-phrase-42",
                              "password2": "a-long-pass-phrase-42"})
    assert response.status_code == 302, response.content[:500]
    assert ChatProfile.objects.filter(user__username=name).exists()


async def test_ban_from_the_user_list_closes_their_sockets_on_every_instance(web_a, web_b, alice, bob, room):
    staff = superuser()
    async with (
        chat_socket(web_a, room.slug, alice.cookie) as on_a,
        chat_socket(web_b, room.slug, alice.cookie) as on_b,
        chat_socket(web_b, room.slug, bob.cookie) as bystander,
    ):
        with httpx.Client(base_url=web_a.url, cookies={"sessionid": session_cookie(staff)}, timeout=10) as client:
            page = client.get("/admin/auth/user/", params={"q": alice.username})
            assert page.status_code == 200 and 'value="ban"' in page.text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            selection = {"action": "ban", "_selected_action": [str(alice.pk)], "csrfmiddlewaretoken": token}
            asked = client.post("/admin/auth/user/", data={**selection, "index": "0"})
            assert asked.status_code == 200 and 'name="reason"' in asked.text, asked.text[:500]
            assert alice.username in asked.text
            assert not ModerationAction.objects.filter(target_user=alice).exists()  # nothing before the yes
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', asked.text).group(1)
            done = client.post("/admin/auth/user/", data={**selection, "csrfmiddlewaretoken": token,
                                                          "confirm": "yes", "reason": "spam links"})
            assert done.status_code == 302, done.text[:500]
        banned_at = time.monotonic()
        assert await on_a.close_code(timeout=1.0) == 4403
        assert await on_b.close_code(timeout=max(0.05, 1.0 - (time.monotonic() - banned_at))) == 4403
        await bystander.send({"type": "ping"})
        await bystander.recv_type("pong")
    entry = ModerationAction.objects.get(action="ban", target_user=alice)
    assert (entry.actor, entry.reason) == (staff, "spam links")
    assert ChatProfile.objects.get(user=alice).banned


def test_a_users_page_mutes_for_an_hour_and_unmutes_with_reasons(alice):
    staff = superuser()
    client = staff_client(staff)
    page = client.get(f"/admin/auth/user/{alice.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "in good standing" in text
    for label in ("Ban", "Mute for 1 hour", "Mute for 24 hours", "Mute until lifted"):
        assert f">{label}</a>" in text, label

    confirm(client, f"/admin/auth/user/{alice.pk}/moderate/mute_hour/", {}, "cooling off")
    profile = ChatProfile.objects.get(user=alice)
    assert permissions.is_muted(profile.muted_until)
    assert 55 * 60 < (profile.muted_until - timezone.now()).total_seconds() <= 3600
    page = client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert "muted for 59 min" in page or "muted for 1 h 0 min" in page
    assert ">Unmute</a>" in page

    confirm(client, f"/admin/auth/user/{alice.pk}/moderate/unmute/", {}, "")
    assert ChatProfile.objects.get(user=alice).muted_until is None
    log = list(ModerationAction.objects.filter(target_user=alice).values_list("action", "reason", "actor"))
    assert log == [("unmute", "", staff.pk), ("mute", "cooling off", staff.pk)]


def test_the_message_list_mutes_and_bans_the_selected_messages_authors(alice, bob, room):
    staff = superuser()
    client = staff_client(staff)
    first, second = message_in(room, alice), message_in(room, alice)
    other = message_in(room, bob)
    confirm(client, "/admin/chat/message/", {"action": "mute_until_lifted",
                                             "_selected_action": [str(first.pk), str(second.pk)]}, "flooding")
    assert ChatProfile.objects.get(user=alice).muted_until.year == 9999
    assert ModerationAction.objects.filter(action="mute", target_user=alice).count() == 1  # one author, once
    confirm(client, "/admin/chat/message/", {"action": "ban", "_selected_action": [str(other.pk)]}, "")
    assert ChatProfile.objects.get(user=bob).banned and not ChatProfile.objects.get(user=alice).banned


def test_a_reports_page_hides_bans_mutes_or_dismisses(alice, bob, room):
    staff = superuser()
    client = staff_client(staff)
    reports = [Report.objects.create(message=message_in(room, alice), reporter=bob, reason=f"r{n}")
               for n in range(4)]
    page = client.get(f"/admin/chat/report/{reports[0].pk}/change/").content.decode()
    for label in ("Hide the message", "Ban the author", "Mute the author for 1 hour", "Dismiss"):
        assert f">{label}</a>" in page, label

    confirm(client, f"/admin/chat/report/{reports[0].pk}/act/hide/", {}, "slur")
    confirm(client, f"/admin/chat/report/{reports[1].pk}/act/mute_day/", {}, "")
    confirm(client, f"/admin/chat/report/{reports[2].pk}/act/dismiss/", {}, "not against the rules")
    confirm(client, f"/admin/chat/report/{reports[3].pk}/act/ban/", {}, "repeat offender")

    assert all(report.resolved for report in Report.objects.filter(pk__in=[r.pk for r in reports]))
    assert Message.objects.get(pk=reports[0].message_id).hidden
    assert not Message.objects.get(pk=reports[2].message_id).hidden
    profile = ChatProfile.objects.get(user=alice)
    assert profile.banned and permissions.is_muted(profile.muted_until)
    hide = ModerationAction.objects.get(action="hide", target_message_id=reports[0].message_id)
    assert (hide.actor, hide.reason) == (staff, f"report #{reports[0].pk}: slur")
    ban = ModerationAction.objects.get(action="ban", target_user=alice)
    assert ban.reason == f"report #{reports[3].pk}: repeat offender"
    mute = ModerationAction.objects.get(action="mute", target_user=alice)
    assert mute.reason == f"report #{reports[1].pk}: r1"  # no reason given: the report's
    dismissed = ModerationAction.objects.get(action="resolve report", target_message_id=reports[2].message_id)
    assert dismissed.reason == f"report #{reports[2].pk}: not against the rules"
    assert client.get(f"/admin/chat/report/{reports[0].pk}/change/").content.decode().count("/act/") == 0


def test_the_desk_lists_open_reports_actions_standings_and_rooms_without_private_bodies(alice, bob, room):
    staff = superuser()
    client = staff_client(staff)
    index = client.get("/admin/").content.decode()
    assert 'href="/admin/chat/desk/"' in index
    assert index.index("Moderation desk") < index.index("Chat profiles")  # first on the index

    public = Report.objects.create(message=message_in(room, alice, "public-" + uuid.uuid4().hex[:8]),
                                   reporter=bob, reason="rude")
    for reason in ("also rude", "rude again"):  # the room's third report this week
        Report.objects.create(message=message_in(room, alice), reporter=bob, reason=reason)
    dm, _ = dm_open(actor=alice, username=bob.username)
    secret = message_in(dm, alice, "secret-" + uuid.uuid4().hex[:8])
    private = Report.objects.create(message=secret, reporter=bob, reason="threat")
    unreported = message_in(make_room(alice, private=True), alice, "hush-" + uuid.uuid4().hex[:8])
    views_before = ModerationAction.objects.filter(actor=staff).count()

    desk = client.get("/admin/chat/desk/")
    assert desk.status_code == 200
    text = desk.content.decode()
    assert public.message.body in text and f"/admin/chat/report/{public.pk}/change/" in text
    assert f"/admin/chat/report/{private.pk}/change/" in text and "threat" in text
    assert secret.body not in text and unreported.body not in text  # read on the report's page, logged
    assert f"/admin/chat/report/{public.pk}/act/ban/" in text
    assert f"{room.name}</a></td><td>3<" in text.split('id="desk-rooms"')[1]
    assert ModerationAction.objects.filter(actor=staff).count() == views_before  # the desk showed no body

    client.get(f"/admin/chat/report/{private.pk}/change/")
    assert ModerationAction.objects.filter(actor=staff, action="view", target_message=secret).exists()

    confirm(client, f"/admin/chat/report/{public.pk}/act/mute_hour/", {}, "calm down")
    text = client.get("/admin/chat/desk/").content.decode()
    assert f"/admin/chat/report/{public.pk}/change/" not in text  # no longer open
    restricted = text.split('id="desk-restricted"')[1].split("</table>")[0]
    assert alice.username in restricted and "muted for" in restricted and ">Unmute</a>" in restricted
    recent = text.split('id="desk-actions"')[1]
    assert "calm down" in recent and "mute" in recent and staff.username in recent


def test_a_view_only_account_sees_the_desk_but_no_action_and_cannot_act(alice, bob, room):
    viewer = make_user("viewer", is_staff=True)
    grant(viewer, "view_chatprofile", "view_message", "view_report", "view_moderationaction")
    viewer.user_permissions.add(*apps.get_model("auth", "Permission").objects.filter(codename="view_user"))
    message = message_in(room, alice)
    report = Report.objects.create(message=message, reporter=bob, reason="spam")
    client = staff_client(viewer)

    assert 'href="/admin/chat/desk/"' in client.get("/admin/").content.decode()
    desk = client.get("/admin/chat/desk/").content.decode()
    assert f"/admin/chat/report/{report.pk}/change/" in desk and not ACT_LINK.search(desk)
    for page in (f"/admin/chat/report/{report.pk}/change/", f"/admin/auth/user/{alice.pk}/change/"):
        text = client.get(page).content.decode()
        assert not ACT_LINK.search(text), page
    for listing, action in (("/admin/auth/user/", "ban"), ("/admin/chat/message/", "mute_hour"),
                            ("/admin/chat/report/", "ban_authors")):
        assert f'value="{action}"' not in client.get(listing).content.decode(), listing

    for url in (f"/admin/chat/report/{report.pk}/act/ban/", f"/admin/auth/user/{alice.pk}/moderate/ban/"):
        assert client.get(url).status_code == 403
        assert client.post(url, {"confirm": "yes", "reason": "x"}).status_code == 403
    client.post("/admin/auth/user/", {"action": "ban", "_selected_action": [str(alice.pk)], "confirm": "yes"})
    client.post("/admin/chat/report/", {"action": "ban_authors", "_selected_action": [str(report.pk)],
                                        "confirm": "yes"})
    assert not ChatProfile.objects.get(user=alice).banned
    assert not Report.objects.get(pk=report.pk).resolved
    assert not ModerationAction.objects.filter(actor=viewer).exists()

    nobody = make_user("nobody", is_staff=True)
    assert staff_client(nobody).get("/admin/chat/desk/").status_code == 403
