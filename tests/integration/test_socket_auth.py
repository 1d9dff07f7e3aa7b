"""Who a WebSocket is (chat/socket_auth.py): sessions read in batches still answer each socket for
its own session, by Django's rules: a missing, expired or tampered session, an inactive user or a
session signed with an old password opens no socket."""

import asyncio
from datetime import timedelta

import websockets
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.utils import timezone

from chat.socket_auth import _users_read
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

    users = _users_read([*keys, keys[0], "no-such-session", keys[0][:-1] + "x"])

    assert [user and user.pk for user in users] == [good.pk, None, None, None, good.pk, None, None]


async def test_without_a_valid_session_no_socket_opens(web_a, room):
    assert await _first_or_code(web_a, room.slug, None) == 4401
    assert await _first_or_code(web_a, room.slug, "garbage") == 4401
