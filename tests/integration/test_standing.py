"""The user's standing on their own sockets (issue 26): `hello` says `muted_until`, and a mute or
unmute by staff on one instance reaches the user's sockets on the other as a `standing` frame."""

from datetime import datetime

import httpx

from chat.models import ChatProfile
from chat.services import moderation
from tests.integration.test_moderation import admin_action, staff_user
from tests.support import chat_socket


def muted_until_of(user) -> str:
    until = ChatProfile.objects.get(user=user).muted_until
    return until.isoformat().replace("+00:00", "Z")


async def test_hello_and_standing_frames_say_until_when_the_user_is_muted(web_a, web_b, alice, bob, room):
    staff = staff_user()
    profile = moderation.profile_for(alice)
    async with (
        chat_socket(web_b, room.slug, alice.cookie) as sock,
        chat_socket(web_b, room.slug, bob.cookie) as bystander,
    ):
        assert sock.hello["muted_until"] is None

        admin_action(web_a, staff, "chatprofile", "mute_hour", [profile.pk])
        standing = await sock.recv_type("standing", timeout=2)
        assert standing == {"type": "standing", "muted_until": muted_until_of(alice)}
        assert datetime.fromisoformat(standing["muted_until"]) > datetime.now().astimezone()

        async with chat_socket(web_a, room.slug, alice.cookie) as again:  # a new socket: hello says it
            assert again.hello["muted_until"] == standing["muted_until"]

        admin_action(web_a, staff, "chatprofile", "mute_indefinitely", [profile.pk])
        assert await sock.recv_type("standing", timeout=2) == {"type": "standing",
                                                                "muted_until": "9999-01-01T00:00:00Z"}

        admin_action(web_a, staff, "chatprofile", "unmute", [profile.pk])
        assert await sock.recv_type("standing", timeout=2) == {"type": "standing", "muted_until": None}
        async with chat_socket(web_a, room.slug, alice.cookie) as after:
            assert after.hello["muted_until"] is None

        await bystander.send({"type": "ping"})
        await bystander.recv_type("pong")
        assert not [f for f in bystander.frames if f["type"] == "standing"]  # only the user's own sockets


async def test_a_mute_that_ended_is_null_in_hello(web_a, alice, room):
    ChatProfile.objects.update_or_create(user=alice, defaults={"muted_until": datetime(2020, 1, 1).astimezone()})
    async with chat_socket(web_a, room.slug, alice.cookie) as sock:
        assert sock.hello["muted_until"] is None


async def test_a_banned_users_4403_is_told_apart_by_the_api(web_a, alice, bob, room):
    """docs/protocol.md "Your standing": after a 4403 the client asks GET /api/rooms/<slug>/."""
    staff = staff_user()
    admin_action(web_a, staff, "chatprofile", "ban", [moderation.profile_for(alice).pk])
    async with chat_socket(web_a, room.slug, alice.cookie, hello=False) as refused:
        assert await refused.close_code() == 4403
    answer = httpx.get(f"{web_a.url}/api/rooms/{room.slug}/", cookies={"sessionid": alice.cookie})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "banned"
    not_banned = httpx.get(f"{web_a.url}/api/rooms/{room.slug}/", cookies={"sessionid": bob.cookie})
    assert not_banned.status_code == 200
