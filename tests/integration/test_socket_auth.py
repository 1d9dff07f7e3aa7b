"""Who a WebSocket is (chat/socket_auth.py): sessions read in batches still answer each socket for
its own session, by Django's rules: a missing, expired or tampered session, an inactive user or a
session signed with an old password opens no socket."""

import asyncio
from datetime import timedelta

import websockets
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.test import override_settings
from django.utils import timezone

from chat.socket_auth import _session_cookie, _users_read
from tests.conftest import make_user, session_cookie
from tests.support import chat_socket


async def _first_or_code(server, slug: str, cookie: str | None):
    try:
        async with chat_socket(server, slug, cookie, hello=False) as client:
            return await client.recv(timeout=30)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else exc.code


async def test_sockets_joining_together_are_each_their_own_user(web_a, room):
    users = await asyncio.gather(*(sync_to_async(make_user)("batch") for _ in range(24)))
    cookies = await asyncio.gather(*(sync_to_async(session_cookie)(user) for user in users))
    hellos = await asyncio.gather(*(_first_or_code(web_a, room.slug, cookie) for cookie in cookies))
    assert [hello["user"]["username"] for hello in hellos] == [user.username for user in users]


def test_a_session_proves_its_user_by_djangos_rules():
    good, inactive, repassworded, expired = (make_user("auth") for _ in range(4))
    keys = [session_cookie(user) for user in (good, inactive, repassworded, expired)]
    inactive.is_active = False
    inactive.save(update_fields=["is_active"])
    repassworded.set_password("a different one")
    repassworded.save(update_fields=["password"])
    Session.objects.filter(session_key=keys[3]).update(expire_date=timezone.now() - timedelta(seconds=1))

    tampered = keys[0][:-1] + ("x" if keys[0][-1] != "x" else "y")
    users = _users_read([*keys, keys[0], "no-such-session", tampered])

    assert [user and user.pk for user in users] == [good.pk, None, None, None, good.pk, None, None]


async def test_without_a_valid_session_no_socket_opens(web_a, room):
    assert await _first_or_code(web_a, room.slug, None) == 4401
    assert await _first_or_code(web_a, room.slug, "garbage") == 4401


async def test_a_malformed_session_cookie_fails_only_its_own_socket(web_a, room):
    """A cookie no session key can be (a NUL, say) is no session: it cannot fail the query that
    reads the sessions of the handshakes batched with it."""
    users = await asyncio.gather(*(sync_to_async(make_user)("beside") for _ in range(8)))
    cookies = await asyncio.gather(*(sync_to_async(session_cookie)(user) for user in users))
    bad = ['"\\000aaaaaaaaaa"', "a" * 41, "short", "UPPERCASE1234"]
    outcomes = await asyncio.gather(*(_first_or_code(web_a, room.slug, cookie) for cookie in [*bad, *cookies]))
    assert outcomes[:len(bad)] == [4401] * len(bad)
    assert [hello["user"]["username"] for hello in outcomes[len(bad):]] == [user.username for user in users]


def test_session_cookies_that_cannot_be_session_keys_are_no_session():
    def scope(cookie: str) -> dict:
        return {"headers": [(b"cookie", f"sessionid={cookie}".encode("latin1"))]}

    assert _session_cookie(scope("abcdefgh12345678")) == "abcdefgh12345678"
    assert _session_cookie(scope('"\\000aaaaaaaa"')) is None
    assert _session_cookie(scope("")) is None and _session_cookie({"headers": []}) is None


def test_a_session_signed_under_a_fallback_secret_key_opens_no_socket():
    """Django would give it a new key, which a socket cannot hand the browser (and logout would not
    find the socket by): refused, as channels did; the page's next request re-signs it."""
    with override_settings(SECRET_KEY="an-old-secret-key-" + "x" * 40):
        user = make_user("rotated")
        key = session_cookie(user)
    with override_settings(SECRET_KEY="the-new-secret-key-" + "y" * 40,
                           SECRET_KEY_FALLBACKS=["an-old-secret-key-" + "x" * 40]):
        assert _users_read([key]) == [None]
        assert _users_read([session_cookie(user)])[0].pk == user.pk
