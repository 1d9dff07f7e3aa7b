"""Presence and typing across instances on the real Redis layer: one user with two tabs is one
online user, a crashed instance's users drop out on their own, a burst of joins or leaves is a few
frames with the newest list, a user moving instances does not flap offline, and typing is
throttled per user."""

import asyncio
import time
from contextlib import AsyncExitStack

from chat.roomstate import room_state
from tests.conftest import RUN, child_env, make_user, session_cookie
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


def presence_frames(sock, since: int) -> list[list[str]]:
    return [f["online"] for f in sock.frames[since:] if f["type"] == "presence"]


async def test_a_burst_of_joins_and_of_leaves_is_a_few_frames_with_the_newest_list(web_a, web_b, alice, room):
    joiners = [make_user("joiner") for _ in range(12)]
    cookies = [session_cookie(user) for user in joiners]
    everyone = sorted([alice.username, *(user.username for user in joiners)])
    async with chat_socket(web_a, room.slug, alice.cookie) as observer:
        await next_presence(observer, lambda online: online == [alice.username])  # its own arrival's
        since = len(observer.frames)
        async with AsyncExitStack() as stack:
            # All at once on the other instance: its changes within CHAT_PRESENCE_COALESCE_SECONDS
            # (1 s by default) of the first go out as one frame, read when it goes.
            socks = await asyncio.gather(*(stack.enter_async_context(chat_socket(web_b, room.slug, cookie))
                                           for cookie in cookies))
            await next_presence(observer, lambda online: online == everyone)
            burst = presence_frames(observer, since)
            assert 1 <= len(burst) <= 3, burst
            assert all(set(online) <= set(everyone) for online in burst)

            # One leaving alone is still announced: the final state always goes out.
            gone = joiners[0].username
            await socks[0].close()
            online = await next_presence(observer, lambda online: gone not in online)
            assert online == [name for name in everyone if name != gone]

            since = len(observer.frames)
            await asyncio.gather(*(sock.close() for sock in socks[1:]))
            await next_presence(observer, lambda online: online == [alice.username])
            leaves = presence_frames(observer, since)
            assert len(leaves) <= 3, leaves


async def test_a_user_moving_instances_within_the_window_does_not_flap_offline(web_b, alice, bob, room):
    # A window far longer than a join, so the move is inside it however loaded the machine is.
    old = WebServer(f"web-window-{RUN}", child_env(CHAT_PRESENCE_COALESCE_SECONDS="3")).start()
    try:
        async with chat_socket(web_b, room.slug, alice.cookie) as observer:
            async with chat_socket(old, room.slug, bob.cookie) as moving:
                await next_presence(observer, lambda online: bob.username in online)
                since = len(observer.frames)
                await moving.close()

                async def left() -> bool:
                    return bob.username not in await room_state().presence_online(room.id)

                deadline = time.monotonic() + 10
                while not await left():  # bob's leave is in Redis: the old instance's window runs
                    assert time.monotonic() < deadline, "bob's leave never reached Redis"
                    await asyncio.sleep(0.02)
            async with chat_socket(web_b, room.slug, bob.cookie) as moved:
                assert bob.username in moved.hello["online"]
                # The new instance announces the join, the old one the leave after its window: both
                # read the list once bob is back.
                while len(presence_frames(observer, since)) < 2:
                    await observer.recv_type("presence", timeout=15)
                assert all(bob.username in online for online in presence_frames(observer, since))
    finally:
        old.stop()


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


async def test_a_heartbeat_that_finds_a_user_run_out_puts_them_back_and_names_the_room(room):
    """An instance stalled past the presence TTL (or a shard restarted empty) still has the socket:
    its heartbeat puts the user back online and names the room, whose sockets then hear it."""
    state = room_state()
    shard, prefix = state._room(room.id)
    entry = (room.id, "conn-stalled", "stalled-user")
    await state.presence_join(*entry)
    await shard.redis.zadd(f"{prefix}:presence", {"stalled-user": time.time() - 1})  # ran out, not trimmed yet
    assert "stalled-user" not in await state.presence_online(room.id)

    assert await state.presence_refresh([entry]) == ([room.id], set())
    assert "stalled-user" in await state.presence_online(room.id)
    assert await state.presence_refresh([entry]) == ([], set()), "online all along: nothing to announce"


async def test_a_heartbeat_keeps_every_connection_and_drops_the_expired(room):
    """More connections than one refresh call takes (chat.limits.REFRESH_CHUNK): each is extended,
    each user's socket count too (closed ones stay closed), and a user whose entries ran out leaves."""
    state = room_state()
    entries = [(room.id, f"conn-{n}", f"user-{n % 1500}") for n in range(2500)]
    shard, prefix = state._room(room.id)
    await shard.redis.zadd(f"{prefix}:presence", {"gone-user": time.time() - 1})

    rooms_changed, failed = await state.presence_refresh(entries)

    assert rooms_changed == [room.id] and not failed
    online = await state.presence_online(room.id)
    assert "gone-user" not in online and len(online) == 1500
    assert await shard.redis.zscore(f"{prefix}:presence:user-7", "conn-1507") > time.time() + 1

    users = [user.pk for user in [make_user("refresh") for _ in range(3)]]
    sockets = [(users[n % 3], f"sock-{n}") for n in range(1200)]
    # Opened with 20 s to live (long enough that none runs out while the others open, on any host)
    # and refreshed to 60: a score past now + 30 is the refresh's.
    opened = await asyncio.gather(*(state.limits.socket_open(user_id, conn_id, 10_000, 20)
                                    for user_id, conn_id in sockets[:-1]))  # the last one closed before the heartbeat
    assert all(opened)
    await state.limits.sockets_refresh(sockets, 60)
    redis, base, _ = state.limits._user(users[0])
    assert await redis.zscore(f"{base}:sockets", "sock-0") > time.time() + 30
    assert await redis.ttl(f"{base}:sockets") > 30
    redis, base, _ = state.limits._user(sockets[-1][0])
    assert await redis.zscore(f"{base}:sockets", sockets[-1][1]) is None
