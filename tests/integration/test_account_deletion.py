"""Account deletion (chat.services.erasure) on two instances sharing Postgres, Redis and Kafka, with
the shared worker: the user's sockets close with 4401 on both at once, history and replay show the
chosen form (kept under a "deleted user" stand-in, or removed: gone from history, replay and
search), their reactions leave others' messages, the DM partner keeps the DM, and the old
credentials no longer log in. Through the settings page and `manage.py delete_user`."""

import asyncio
import re
import secrets
import time

import httpx
import pytest
from django.contrib.auth import get_user_model
from uuid6 import uuid7

from chat.bus import records
from chat.models import ChatProfile, Membership, Message, ModerationAction, Room
from chat.services.erasure import STAND_IN_PREFIX, stand_in_username
from chat.services.persistence import messages_persist
from chat.services.rooms import dm_open
from tests.conftest import child_env, make_room, make_user, session_cookie
from tests.integration.test_api import client_for
from tests.support import PYTHON, ROOT, chat_socket, unique, wait_until

pytestmark = pytest.mark.usefixtures("worker")

SOON = 5.0  # "within seconds": the close goes out when the account is closed, before any message work


def user_with_password(prefix: str):
    password = "pw-" + secrets.token_hex(8)
    user = get_user_model().objects.create_user(username=unique(prefix), password=password)
    user.password_plain = password
    user.cookie = session_cookie(user)
    return user


async def say(sock, body: str, **extra) -> dict:
    await sock.send({"type": "message.send", "body": body, "client_id": unique("c"), **extra})
    return await sock.recv_type("ack")


def stored(*ids: str) -> None:
    wait_until(lambda: Message.objects.filter(id__in=ids).count() == len(ids), 20, message="the messages stored")


def history(server, user, slug: str) -> httpx.Response:
    with client_for(server, user) as client:
        return client.get(f"/api/rooms/{slug}/messages/?limit=200")


def search(server, user, words: str) -> list[dict]:
    with client_for(server, user) as client:
        found = client.get("/api/search/", params={"q": words})
        assert found.status_code == 200, found.text
        return found.json()["messages"]


def login_works(server, username: str, password: str) -> bool:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        done = client.post("/accounts/login/", data={"username": username, "password": password,
                                                     "csrfmiddlewaretoken": token})
        return done.status_code == 302


async def closed_soon_after(asked: list[float], *socks) -> None:
    """Each socket closes with 4401 within SOON of the request that deleted the account (`asked`
    holds when it was sent: the pages before it are not part of the promise)."""
    for sock in socks:
        assert await sock.close_code(timeout=60) == 4401
        closed = time.monotonic()
        assert asked and closed - asked[0] < SOON, f"closed {closed - asked[0]:.1f} s after the request"


def delete_from_settings(server, user, asked: list[float]) -> httpx.Response:
    """The settings page's form, as a browser submits it: the password again, with the CSRF token."""
    with httpx.Client(base_url=server.url, timeout=120, cookies={"sessionid": user.cookie}) as client:
        page = client.get("/accounts/settings/")
        assert page.status_code == 200 and "Delete your account" in page.text, page.text[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        wrong = client.post("/accounts/settings/delete/", data={"password": "not-it", "csrfmiddlewaretoken": token})
        assert wrong.status_code == 400 and get_user_model().objects.filter(pk=user.pk).exists()
        asked.append(time.monotonic())
        return client.post("/accounts/settings/delete/", data={"password": user.password_plain,
                                                               "csrfmiddlewaretoken": token})


async def test_deleted_from_the_settings_page_messages_kept_under_a_deleted_user(web_a, web_b):
    leaver, partner = user_with_password("leaver"), user_with_password("partner")
    first, second = make_room(partner), make_room(partner)
    dm, _ = dm_open(actor=partner, username=leaver.username)
    word = "kq" + secrets.token_hex(4)
    async with (
        chat_socket(web_a, first.slug, leaver.cookie) as on_a,
        chat_socket(web_b, second.slug, leaver.cookie) as on_b,
        chat_socket(web_b, first.slug, partner.cookie) as watcher,
    ):
        mine = await say(on_a, f"kept {word} from the leaver")
        theirs = await say(watcher, "the partner's own")
        await on_a.send({"type": "reaction.add", "id": theirs["id"], "emoji": "👍"})
        await watcher.recv_type("reaction")
        elsewhere = await say(on_b, "in the second room")
        async with chat_socket(web_a, dm.slug, leaver.cookie) as in_dm:
            direct = await say(in_dm, "just between us")
        stored(mine["id"], theirs["id"], elsewhere["id"], direct["id"])

        asked = []
        deleting = asyncio.create_task(asyncio.to_thread(delete_from_settings, web_a, leaver, asked))
        await closed_soon_after(asked, on_a, on_b)
        done = await deleting
        assert done.status_code == 200 and "Account deleted" in done.text, done.text[:500]
        # Its reaction leaves the partner's message live.
        seen = await watcher.recv_type("reaction")
        assert seen["id"] == theirs["id"] and seen["reactions"] == []

    assert not get_user_model().objects.filter(pk=leaver.pk).exists()
    stand_in = get_user_model().objects.get(username=stand_in_username(leaver.pk))
    assert stand_in.username.startswith(STAND_IN_PREFIX) and not stand_in.is_active
    assert not stand_in.has_usable_password() and ChatProfile.objects.get(user=stand_in).deleted_account
    shown = {"id": stand_in.pk, "username": stand_in.username}

    page = history(web_b, partner, first.slug).json()["messages"]
    assert [m["author"] for m in page if m["id"] == mine["id"]] == [shown]
    assert [m["reactions"] for m in page if m["id"] == theirs["id"]] == [[]]
    async with chat_socket(web_a, first.slug, partner.cookie, after=0) as replay:  # from Redis's buffer
        replayed = {m["id"]: m for m in await replay.messages(2)}
    assert replayed[mine["id"]]["author"] == shown and replayed[theirs["id"]]["reactions"] == []
    assert [m["author"] for m in search(web_a, partner, word)] == [shown]

    # The DM stays the partner's, with two members: the stand-in holds the leaver's place.
    assert set(Membership.objects.filter(room=dm).values_list("user_id", flat=True)) == {partner.pk, stand_in.pk}
    in_dm = history(web_a, partner, dm.slug)
    assert in_dm.status_code == 200
    assert [(m["body"], m["author"]) for m in in_dm.json()["messages"]] == [("just between us", shown)]

    assert not login_works(web_b, leaver.username, leaver.password_plain)
    wait_until(lambda: Message.objects.get(id=theirs["id"]).reactions == [], 20, message="the reaction record stored")
    entry = ModerationAction.objects.get(action="delete_account", target_user=stand_in)
    assert entry.actor is None and "keep" in entry.reason


async def test_delete_user_command_removes_every_message_live_and_from_history_replay_and_search(web_a, web_b):
    leaver, partner = user_with_password("eraser"), user_with_password("partner")
    first, second = make_room(partner), make_room(partner)
    dm, _ = dm_open(actor=leaver, username=partner.username)
    word = "zq" + secrets.token_hex(4)  # a word only the leaver's messages hold
    async with (
        chat_socket(web_a, first.slug, leaver.cookie) as on_a,
        chat_socket(web_b, second.slug, leaver.cookie) as on_b,
        chat_socket(web_b, first.slug, partner.cookie) as watcher,
    ):
        mine = await say(on_a, f"{word} secret line\nmore")
        reply = await say(watcher, "answering it", reply_to=mine["id"])
        elsewhere = await say(on_b, f"{word} in the second room")
        async with chat_socket(web_a, dm.slug, leaver.cookie) as in_dm:
            direct = await say(in_dm, f"{word} between us")
        async with chat_socket(web_a, dm.slug, partner.cookie) as partner_dm:
            kept = await say(partner_dm, "the partner's DM line")
        stored(mine["id"], reply["id"], elsewhere["id"], direct["id"], kept["id"])
        assert len(search(web_a, partner, word)) == 3

        command = await asyncio.create_subprocess_exec(
            PYTHON, "manage.py", "delete_user", leaver.username, "--messages", "remove", "--yes", cwd=ROOT,
            env=child_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        started = time.monotonic()
        assert await on_a.close_code(timeout=SOON + 5) == 4401  # + the command's start-up
        assert await on_b.close_code(timeout=max(0.1, SOON + 5 - (time.monotonic() - started))) == 4401
        gone = await watcher.recv_type("message.deleted", timeout=30)
        assert gone == {"type": "message.deleted", "id": mine["id"], "seq": mine["seq"]}
        output, _ = await asyncio.wait_for(command.communicate(), 120)
        assert command.returncode == 0, output.decode()
        assert "messages: 3 of 3" in output.decode() and "account deleted" in output.decode()

    assert not get_user_model().objects.filter(pk=leaver.pk).exists()
    assert [m["id"] for m in history(web_b, partner, first.slug).json()["messages"]] == [reply["id"]]
    assert history(web_a, partner, second.slug).json()["messages"] == []
    async with chat_socket(web_a, first.slug, partner.cookie, after=0) as replay:
        await replay.recv_type("resumed")
    replayed = [f for f in replay.frames if f["type"] == "message"]
    assert [m["id"] for m in replayed] == [reply["id"]]
    # The reply's quote in the room's buffer no longer holds the removed text.
    assert replayed[0]["reply_to"]["excerpt"] == "" and replayed[0]["reply_to"]["state"] == "deleted"
    assert search(web_a, partner, word) == []
    in_dm = history(web_a, partner, dm.slug)
    assert in_dm.status_code == 200 and [m["id"] for m in in_dm.json()["messages"]] == [kept["id"]]
    # Postgres keeps no body: the worker applied the erasure records (the rev moved on) over the rows.
    for ident in (mine["id"], elsewhere["id"], direct["id"]):
        wait_until(lambda ident=ident: Message.objects.get(id=ident).rev >= 2, 20, message="the erasure stored")
        row = Message.objects.get(id=ident)
        assert (row.body, row.deleted, row.author.username) == ("", True, stand_in_username(leaver.pk))
    assert not login_works(web_a, leaver.username, leaver.password_plain)


async def test_thousands_of_messages_are_changed_in_batches(web_a):
    """Stored through the worker's own write (as if Kafka had carried them), in two rooms; all move."""
    leaver, partner = user_with_password("prolific"), make_user("partner")
    rooms = [make_room(partner), make_room(partner)]
    count = 2400
    batch = [records.decode(records.encode(records.message_record("message.created", {
        "id": str(uuid7()), "room": room.slug, "seq": 10_000 + i,
        "author": {"id": leaver.pk, "username": leaver.username}, "body": f"old line {i}",
        "created_at": "2026-01-01T00:00:00Z", "edited_at": None, "client_id": None, "rev": 1,
        "reply_to": None, "reactions": [], "attachments": []}, room_id=room.pk)))
        for i in range(count // 2) for room in rooms]
    assert messages_persist(batch) == count
    command = await asyncio.create_subprocess_exec(
        PYTHON, "manage.py", "delete_user", leaver.username, "--yes", cwd=ROOT, env=child_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(command.communicate(), 300)
    assert command.returncode == 0, output.decode()[-2000:]
    lines = output.decode().splitlines()
    assert f"messages: {count} of {count}" in lines and sum(line.startswith("messages: ") for line in lines) >= 4
    stand_in = get_user_model().objects.get(username=stand_in_username(leaver.pk))
    assert Message.objects.filter(author=stand_in).count() == count
    assert not Room.objects.filter(pk__in=[r.pk for r in rooms], messages__author_id=leaver.pk).exists()
    wait_until(lambda: not Message.objects.filter(author=stand_in, rev=1).exists(), 60,
               message="the worker to store every record")


def admin_delete(server, staff, user, sent: list[float]) -> httpx.Response:
    """The user list's "Delete account": the confirmation page, then its POST with a reason."""
    with httpx.Client(base_url=server.url, timeout=120, cookies={"sessionid": session_cookie(staff)}) as client:
        listing = client.get("/admin/auth/user/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', listing.text).group(1)
        chosen = {"action": "delete_account", "_selected_action": [user.pk], "csrfmiddlewaretoken": token}
        asked = client.post("/admin/auth/user/", data=chosen)
        assert asked.status_code == 200 and user.username in asked.text and "deleted user" in asked.text
        sent.append(time.monotonic())
        return client.post("/admin/auth/user/", data={**chosen, "confirm": "yes", "reason": "asked by email"})


async def test_staff_delete_an_account_from_the_user_admin(web_a, web_b):
    leaver, staff = user_with_password("asked"), make_user("staff", is_staff=True, is_superuser=True)
    room = make_room(staff)
    async with (chat_socket(web_a, room.slug, leaver.cookie) as on_a,
                chat_socket(web_b, room.slug, leaver.cookie) as on_b):
        mine = await say(on_a, "before I go")
        stored(mine["id"])
        asked = []
        deleting = asyncio.create_task(asyncio.to_thread(admin_delete, web_b, staff, leaver, asked))
        await closed_soon_after(asked, on_a, on_b)
        assert (await deleting).status_code == 302
    assert not get_user_model().objects.filter(pk=leaver.pk).exists()
    stand_in = get_user_model().objects.get(username=stand_in_username(leaver.pk))
    assert Message.objects.get(id=mine["id"]).author == stand_in
    entry = ModerationAction.objects.get(action="delete_account", target_user=stand_in)
    assert entry.actor == staff and "asked by email" in entry.reason
