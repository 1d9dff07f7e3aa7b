"""A user's data export (chat.services.export): the settings page's download, `manage.py export_user`
and the admin's action give the same JSON, holding exactly the user's own messages and rooms, and
nothing of a private room they are not in."""

import json
import re
import subprocess

import httpx
import pytest

from chat.models import Membership, ReadState
from chat.services.rooms import dm_open, room_add_member
from tests.conftest import child_env, make_room, make_user, session_cookie
from tests.support import PYTHON, ROOT, chat_socket, unique, wait_until

pytestmark = pytest.mark.usefixtures("worker")


async def say(sock, body: str, **extra) -> dict:
    await sock.send({"type": "message.send", "body": body, "client_id": unique("c"), **extra})
    return await sock.recv_type("ack")


def without_time(document: dict) -> dict:
    return {k: v for k, v in document.items() if k != "exported_at"}


def command_export(username: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "manage.py", "export_user", username, *extra], cwd=ROOT, env=child_env(),
                          capture_output=True, timeout=120, check=False)


async def test_export_holds_the_users_own_data_and_nothing_of_a_private_room_they_are_not_in(web_a, web_b, tmp_path):
    me, other = make_user("exporter"), make_user("other")
    me.cookie, other.cookie = session_cookie(me), session_cookie(other)
    public, private = make_room(other), make_room(other, private=True)
    room_add_member(actor=other, room=private, username=me.username)
    secret_room = make_room(other, private=True)  # not mine: nothing of it may be exported
    dm, _ = dm_open(actor=me, username=other.username)
    mine = []
    async with chat_socket(web_a, public.slug, me.cookie) as a, chat_socket(web_b, public.slug, other.cookie) as b:
        theirs = await say(b, "the other's words in public")
        mine.append(await say(a, "my public line", reply_to=theirs["id"]))
        await a.send({"type": "reaction.add", "id": theirs["id"], "emoji": "🎉"})
        await b.recv_type("reaction")
        await a.send({"type": "read", "seq": theirs["seq"]})
    async with chat_socket(web_b, private.slug, me.cookie) as p:
        mine.append(await say(p, f"my private line for @{other.username}"))
    async with chat_socket(web_a, dm.slug, me.cookie) as d, chat_socket(web_a, dm.slug, other.cookie) as o:
        mine.append(await say(d, "my direct line"))
        await say(o, "the other's direct line")
    async with chat_socket(web_b, secret_room.slug, other.cookie) as s:
        secret = await say(s, "the other's secret line")
    wait_until(lambda: other.messages.filter(id=secret["id"]).exists() and me.messages.count() == 3, 20,
               message="the messages stored")
    wait_until(lambda: ReadState.objects.filter(user=me, room=public, seq=theirs["seq"]).exists(), 10,
               message="the read state stored")
    wait_until(lambda: other.messages.get(id=theirs["id"]).reactions != [], 20, message="the reaction stored")

    with httpx.Client(base_url=web_a.url, timeout=30, cookies={"sessionid": me.cookie}) as client:
        assert 'href="/accounts/settings/"' in client.get("/").text  # the header's link
        download = client.get("/accounts/settings/export/")
    assert download.status_code == 200, download.text[:500]
    assert download.headers["content-type"] == "application/json"
    assert download.headers["content-disposition"].startswith("attachment; filename=")
    page = json.loads(download.content)

    assert page["profile"]["username"] == me.username and page["profile"]["id"] == me.pk
    assert [m["id"] for m in page["messages"]] == sorted(m["id"] for m in mine)
    assert {m["body"] for m in page["messages"]} == {"my public line", f"my private line for @{other.username}",
                                                    "my direct line"}
    reply = next(m for m in page["messages"] if m["room"] == public.slug)
    assert reply["reply_to"] == theirs["id"] and reply["state"] == "visible" and reply["seq"] == mine[0]["seq"]
    rooms = {room["slug"]: room for room in page["rooms"]}
    assert set(rooms) == {public.slug, private.slug, dm.slug}
    assert rooms[private.slug]["role"] == Membership.Role.MEMBER and rooms[public.slug]["role"] is None
    assert rooms[dm.slug]["direct"] and rooms[dm.slug]["dm_with"] == other.username
    assert page["reactions"] == [{"room": public.slug, "message": theirs["id"], "seq": theirs["seq"], "emoji": "🎉"}]
    assert {"room": public.slug, "seq": theirs["seq"]}.items() <= next(
        r for r in page["read_states"] if r["room"] == public.slug).items()
    raw = download.text
    for absent in (secret_room.slug, secret_room.name, "the other's secret line", "the other's words in public",
                   "the other's direct line"):
        assert absent not in raw

    printed = command_export(me.username)
    assert printed.returncode == 0, printed.stderr.decode()
    assert without_time(json.loads(printed.stdout)) == without_time(page)
    written = command_export(me.username, "--output", str(tmp_path / "export.json"))
    assert written.returncode == 0, written.stderr.decode()
    assert without_time(json.loads((tmp_path / "export.json").read_text())) == without_time(page)
    assert command_export("no-such-user-" + unique("x")).returncode != 0

    staff = make_user("staff", is_staff=True, is_superuser=True)
    with httpx.Client(base_url=web_b.url, timeout=30, cookies={"sessionid": session_cookie(staff)}) as client:
        listing = client.get("/admin/auth/user/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', listing.text).group(1)
        from_admin = client.post("/admin/auth/user/", data={"action": "export_data", "_selected_action": [me.pk],
                                                            "csrfmiddlewaretoken": token})
    assert from_admin.status_code == 200 and "attachment" in from_admin.headers["content-disposition"]
    assert without_time(from_admin.json()) == without_time(page)
