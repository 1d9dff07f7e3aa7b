"""Moderation through the real Django admin over HTTP on one daphne instance, taking effect live on
sockets of both instances (sync admin code -> async Redis channel layer), and recorded in the log."""

import re
import time
import uuid

import httpx

from chat.models import Message, ModerationAction, Report
from chat.services import moderation
from tests.conftest import make_user, session_cookie
from tests.support import chat_socket, wait_until


def staff_user():
    user = make_user("staff", is_staff=True, is_superuser=True)
    user.cookie = session_cookie(user)
    return user


def admin_action(server, staff, model: str, action: str, pks: list) -> httpx.Response:
    with httpx.Client(base_url=server.url, cookies={"sessionid": staff.cookie}) as client:
        page = client.get(f"/admin/chat/{model}/")
        assert page.status_code == 200, page.text[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        done = client.post(f"/admin/chat/{model}/", data={"action": action, "_selected_action": [str(p) for p in pks],
                                                          "csrfmiddlewaretoken": token})
        assert done.status_code == 302, done.text[:1000]
        return done


async def stored(message_id: str, timeout: float = 20) -> Message:
    wait_until(lambda: Message.objects.filter(id=message_id).exists(), timeout, message="the worker to store it")
    return Message.objects.select_related("room", "author").get(id=message_id)


async def test_ban_closes_the_users_sockets_on_every_instance_within_a_second(web_a, web_b, alice, bob, room):
    staff = staff_user()
    profile = moderation.profile_for(alice)
    async with (
        chat_socket(web_a, room.slug, alice.cookie) as on_a,
        chat_socket(web_b, room.slug, alice.cookie) as on_b,
        chat_socket(web_b, room.slug, bob.cookie) as bystander,
    ):
        admin_action(web_a, staff, "chatprofile", "ban", [profile.pk])
        banned_at = time.monotonic()
        assert await on_a.close_code(timeout=1.0) == 4403
        assert await on_b.close_code(timeout=max(0.05, 1.0 - (time.monotonic() - banned_at)))
        assert on_b.ws.close_code == 4403
        await bystander.send({"type": "ping"})
        await bystander.recv_type("pong")  # others are unaffected

    async with chat_socket(web_b, room.slug, alice.cookie, hello=False) as again:
        assert await again.close_code() == 4403
    refused = httpx.get(f"{web_a.url}/api/rooms/", cookies={"sessionid": alice.cookie})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    entry = ModerationAction.objects.get(action="ban", target_user=alice)
    assert entry.actor == staff

    admin_action(web_a, staff, "chatprofile", "unban", [profile.pk])
    async with chat_socket(web_b, room.slug, alice.cookie) as welcome_back:
        assert welcome_back.hello["user"]["id"] == alice.id


async def test_mute_applies_to_open_sockets_and_unmute_lifts_it(web_a, web_b, alice, room):
    staff = staff_user()
    profile = moderation.profile_for(alice)
    async with chat_socket(web_b, room.slug, alice.cookie) as sock:
        admin_action(web_a, staff, "chatprofile", "mute_hour", [profile.pk])

        deadline = time.monotonic() + 2
        while True:  # the mute reaches web_b's hub within moments of the admin's answer
            await sock.send({"type": "message.send", "body": "can I talk?", "client_id": uuid.uuid4().hex})
            reply = await sock.recv_type("ack", "error")
            if reply["type"] == "error":
                break
            assert time.monotonic() < deadline, "the mute did not reach the other instance within 2 s"
        assert reply["code"] == "muted"

        admin_action(web_a, staff, "chatprofile", "unmute", [profile.pk])
        deadline = time.monotonic() + 2
        while True:
            await sock.send({"type": "message.send", "body": "back", "client_id": uuid.uuid4().hex})
            reply = await sock.recv_type("ack", "error")
            if reply["type"] == "ack":
                break
            assert reply["code"] == "muted" and time.monotonic() < deadline
    actions = list(ModerationAction.objects.filter(target_user=alice).values_list("action", flat=True))
    assert actions == ["unmute", "mute"]


async def test_hide_removes_the_message_everywhere_and_unhide_restores_history(web_a, web_b, worker, alice, bob,
                                                                               room):
    staff = staff_user()
    async with chat_socket(web_a, room.slug, alice.cookie) as author, chat_socket(web_b, room.slug, bob.cookie) as b:
        await author.send({"type": "message.send", "body": "<script>alert('x')</script> spam", "client_id": "s1"})
        ack = await author.recv_type("ack")
        await b.recv_type("message")
        message = await stored(ack["id"])

        admin_action(web_a, staff, "message", "hide_messages", [message.pk])
        gone = await b.recv_type("message.deleted", timeout=2)
        assert gone == {"type": "message.deleted", "id": ack["id"], "seq": ack["seq"]}

    history = httpx.get(f"{web_b.url}/api/rooms/{room.slug}/messages/", cookies={"sessionid": bob.cookie}).json()
    assert ack["id"] not in [m["id"] for m in history["messages"]]
    async with chat_socket(web_b, room.slug, bob.cookie, after=0) as late:
        await late.recv_type("resumed")
        assert ack["id"] not in [f.get("id") for f in late.frames if f["type"] == "message"]
    assert ModerationAction.objects.get(action="hide", target_message_id=ack["id"]).actor == staff

    # The admin shows bodies as text, never as markup.
    with httpx.Client(base_url=web_a.url, cookies={"sessionid": staff.cookie}) as client:
        listing = client.get(f"/admin/chat/message/?q=spam&room__id__exact={room.id}").text
    assert "<script>alert" not in listing and "&lt;script&gt;alert" in listing

    admin_action(web_a, staff, "message", "unhide_messages", [message.pk])
    history = httpx.get(f"{web_b.url}/api/rooms/{room.slug}/messages/", cookies={"sessionid": bob.cookie}).json()
    assert ack["id"] in [m["id"] for m in history["messages"]]
    # The worker replays the hide/unhide records in order: the message ends visible in Postgres.
    wait_until(lambda: not Message.objects.get(id=ack["id"]).hidden, 10, message="unhide to stay")


async def test_report_then_hide_and_resolve(web_a, web_b, worker, alice, bob, room):
    staff = staff_user()
    async with chat_socket(web_a, room.slug, alice.cookie) as author, chat_socket(web_b, room.slug, bob.cookie) as b:
        await author.send({"type": "message.send", "body": "rude words", "client_id": "r1"})
        ack = await author.recv_type("ack")
        await stored(ack["id"])
        await b.send({"type": "message.report", "id": ack["id"], "reason": "rude"})
        await b.send({"type": "ping"})
        await b.recv_type("pong")
        assert not [f for f in b.frames if f["type"] == "error"]
        report = Report.objects.get(message_id=ack["id"])
        assert (report.reporter, report.reason, report.resolved) == (bob, "rude", False)

        admin_action(web_a, staff, "report", "hide_and_resolve", [report.pk])
        assert (await b.recv_type("message.deleted", timeout=2))["id"] == ack["id"]
        assert (await author.recv_type("message.deleted", timeout=2))["id"] == ack["id"]
    report.refresh_from_db()
    assert report.resolved
    assert set(ModerationAction.objects.filter(target_message_id=ack["id"]).values_list("action", flat=True)) == {
        "hide", "resolve report"}
    with httpx.Client(base_url=web_a.url, cookies={"sessionid": staff.cookie}) as client:
        log = client.get("/admin/chat/moderationaction/").text
        ledger = client.get("/admin/chat/deadletterredrive/")  # beside the log: the dead letters re-driven
    assert "resolve report" in log
    assert ledger.status_code == 200 and "dead letter redrive" in ledger.text.lower()
