"""Presence and typing across instances on the real Redis layer: one user with two tabs is one
online user, a crashed instance's users drop out on their own, and typing is throttled per user."""

import time

from tests.conftest import RUN, child_env
from tests.support import WebServer, chat_socket


async def next_presence(sock, predicate, timeout: float = 20) -> list[str]:
    while True:
        online = (await sock.recv_type("presence", timeout=timeout))["online"]
        if predicate(online):
            return online


async def test_two_tabs_of_one_user_are_one_online_user(web_a, web_b, alice, bob, room):
    async with chat_socket(web_b, room.slug, bob.cookie) as b:
        async with chat_socket(web_a, room.slug, alice.cookie) as tab_one:
            await next_presence(b, lambda online: alice.username in online)
            async with chat_socket(web_b, room.slug, alice.cookie) as tab_two:
                assert tab_two.hello["online"].count(alice.username) == 1
            # One tab closed: alice is still online, and nobody is told otherwise.
            async with chat_socket(web_a, room.slug, bob.cookie) as probe:
                assert probe.hello["online"] == sorted([alice.username, bob.username])
            assert tab_one.hello["online"].count(alice.username) == 1
        online = await next_presence(b, lambda online: alice.username not in online)
        assert online == [bob.username]
        assert not [f for f in b.frames if f["type"] == "presence" and f["online"].count(alice.username) > 1]


async def test_a_crashed_instances_users_drop_out_on_their_own(web_a, alice, bob, room):
    doomed = WebServer(f"web-crash-{RUN}", child_env()).start()
    try:
        async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(doomed, room.slug, bob.cookie):
            await next_presence(a, lambda online: bob.username in online)
            doomed.kill()  # no disconnect handler runs: only the expiry can remove bob
            online = await next_presence(a, lambda online: bob.username not in online, timeout=30)
            assert online == [alice.username]
    finally:
        doomed.stop()


async def test_typing_is_relayed_once_a_start_and_once_a_stop_per_throttle_window(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        first_start = time.monotonic()
        for _ in range(5):
            await a.send({"type": "typing", "active": True})
        await a.send({"type": "typing", "active": False})
        stop = await b.recv_type("typing")
        while stop["active"]:
            stop = await b.recv_type("typing")
        typing = [f for f in b.frames if f["type"] == "typing"]
        assert typing == [{"type": "typing", "user": alice.username, "active": True},
                          {"type": "typing", "user": alice.username, "active": False}]
        # Starts within the throttle (2 s) of the relayed one are dropped; the first after it goes out.
        deadline = first_start + 10
        while True:
            assert time.monotonic() < deadline, "no start relayed again after the throttle"
            await a.send({"type": "typing", "active": True})
            try:
                again = await b.recv_type("typing", timeout=0.25)
            except AssertionError:  # nothing relayed this time: send the next start
                continue
            assert again["active"] is True and time.monotonic() - first_start >= 2.0
            break
