"""The join path: joins that arrive together are read together and still refused one by one; what a
join read before it was in the hub is read again when the hub saw a change meanwhile; and past
CHAT_MAX_PENDING_JOINS a new socket is shed with 1013 and a retry hint, then joins on retry, or under
daphne waits in the listen queue for its turn."""

import asyncio
import random

import pytest
import websockets
from asgiref.sync import sync_to_async

from chat.models import ChatProfile, Membership
from chat.services.moderation import user_ban
from tests.conftest import child_env, make_room, make_user, session_cookie
from tests.integration.test_metrics import scrape
from tests.support import WebServer, chat_socket, unique


async def _outcome(server: WebServer, slug: str, cookie: str) -> int | dict:
    """The hello of a socket to the room, or the code the server closed it with."""
    try:
        async with chat_socket(server, slug, cookie, hello=False) as client:
            first = await client.recv(timeout=30)
            return first
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else exc.code


async def test_joins_read_together_are_refused_one_by_one(web_a, alice):
    """Many sockets at once, so their reads share database hops: members, non-members, a banned
    user and an unknown room each get their own answer."""
    private = make_room(alice, private=True)
    public = make_room(alice)
    members = [make_user("member") for _ in range(6)]
    outsiders = [make_user("outsider") for _ in range(6)]
    banned = make_user("banned")
    for user in members:
        Membership.objects.create(room=private, user=user)
    Membership.objects.create(room=private, user=banned)
    ChatProfile.objects.update_or_create(user=banned, defaults={"banned": True})
    cookies = {user.pk: session_cookie(user) for user in [*members, *outsiders, banned]}
    asks = ([(user, private.slug, "hello") for user in members] + [(user, private.slug, 4403) for user in outsiders]
            + [(user, public.slug, "hello") for user in outsiders] + [(banned, private.slug, 4403),
                                                                      (banned, public.slug, 4403)]
            + [(user, "no-such-" + unique("room"), 4404) for user in members[:3]])
    random.shuffle(asks)
    outcomes = await asyncio.gather(*(_outcome(web_a, slug, cookies[user.pk]) for user, slug, _ in asks))
    for (user, slug, expected), outcome in zip(asks, outcomes, strict=True):
        if expected == "hello":
            assert isinstance(outcome, dict) and outcome["type"] == "hello", (user.username, slug, outcome)
            assert outcome["user"]["username"] == user.username and outcome["room"]["slug"] == slug
            assert user.username in outcome["online"]
        else:
            assert outcome == expected, (user.username, slug, outcome)


async def test_a_ban_after_the_read_still_refuses_the_join(web_a, alice, room):
    """The hub's serials: a user event (here a ban's close) that reaches the process while a join of
    that user is under way makes the join read again once it is in the hub, and refuse."""
    from chat.hub import RoomHub

    hub = RoomHub()
    hub._room_changed(room.pk)  # as _hold does when it subscribes
    mark = hub.mark()
    assert not hub.changed_since(mark, room_id=room.pk, user_id=alice.pk)
    hub.dispatch({"type": "user.close", "user": alice.pk, "code": 4403})
    assert hub.changed_since(mark, room_id=room.pk, user_id=alice.pk)
    # End to end: a banned user's join is refused, and sockets opened before the ban close.
    async with chat_socket(web_a, room.slug, alice.cookie) as before:
        await sync_to_async(user_ban)(actor=make_user("staff", is_staff=True), user=alice)
        assert await before.close_code() == 4403
    assert await _outcome(web_a, room.slug, alice.cookie) == 4403


async def test_room_state_frames_and_new_subscriptions_mark_a_change():
    """A room subscribed anew, or whose state frame (room.updated, dm.state) passed the hub, is a
    change for joins that read before it; a message frame or another room's change is not."""
    from chat import protocol
    from chat.hub import RoomHub

    hub = RoomHub()
    hub._room_changed(1)  # as _hold does when it subscribes
    mark = hub.mark()
    assert not hub.changed_since(mark, room_id=1, user_id=7)
    assert hub.changed_since(mark, room_id=2, user_id=7)  # not subscribed: events before it never came
    hub.dispatch({"type": "room.frame", "room": 1, "seq": None,
                  "text": protocol.encode(protocol.typing_frame(user="x", active=True))})
    assert not hub.changed_since(mark, room_id=1, user_id=7)
    hub.dispatch({"type": "user.standing", "user": 8, "muted_until": None})
    assert not hub.changed_since(mark, room_id=1, user_id=7)
    hub.dispatch({"type": "room.frame", "room": 1, "seq": None,
                  "text": protocol.encode(protocol.room_updated_frame(slug="s", name="n", archived=True))})
    assert hub.changed_since(mark, room_id=1, user_id=7)


async def _join_retrying(server: WebServer, slug: str, cookie: str, shed: list[tuple[int, str]]):
    """A socket that has its hello, trying again after each 1013's hint (noted in `shed`)."""
    deadline = asyncio.get_running_loop().time() + 120  # one join at a time is slow on a loaded machine
    while asyncio.get_running_loop().time() < deadline:
        ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/ws/chat/{slug}/", origin=server.url,
                                      open_timeout=60, additional_headers={"Cookie": f"sessionid={cookie}"})
        try:
            first = await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as exc:
            shed.append((exc.rcvd.code, exc.rcvd.reason))
            await asyncio.sleep(min(1.0, float(exc.rcvd.reason.partition("=")[2] or 0.2)))
            continue
        assert first.startswith('{"type":"hello"'), first
        return ws
    raise AssertionError("a socket never joined")


@pytest.fixture
def storm_cookies(alice):
    return [alice.cookie] + [session_cookie(make_user("storm")) for _ in range(9)]


@pytest.fixture
def shedding():
    """A uvicorn instance that works on one join at a time (uvicorn accepts whenever its loop gets to it)."""
    server = WebServer(unique("shedding"), child_env(CHAT_MAX_PENDING_JOINS="1", CHAT_JOIN_RETRY_SECONDS="0.2",
                                                     CHAT_MAX_SOCKETS_PER_USER="1000"), server="uvicorn").start()
    yield server
    server.stop()


async def test_past_the_pending_joins_limit_sockets_are_shed_and_join_on_retry(shedding, storm_cookies, room):
    shed: list[tuple[int, str]] = []
    held = []
    try:
        for _ in range(5):  # a burst is not guaranteed to overlap on a fast machine: a few at most
            held += await asyncio.gather(*(_join_retrying(shedding, room.slug, storm_cookies[n % 10], shed)
                                           for n in range(40)))
            if shed:
                break
        assert shed, "no socket was shed with one join allowed at a time"
        assert {code for code, _ in shed} == {1013}
        for _, reason in shed:
            # At least half the setting; more while the joins under way need longer (10 s at most, spread).
            assert reason.startswith("retry_after=") and 0.1 <= float(reason.partition("=")[2]) <= 15
        assert len(held) >= 40
    finally:
        await asyncio.gather(*(ws.close() for ws in held))


async def test_at_the_limit_daphne_stops_accepting_and_the_waiting_sockets_join_in_turn(storm_cookies, room):
    """Under daphne the sockets past CHAT_MAX_PENDING_JOINS wait in the listen queue
    (config/daphne_listen.py) and join as the joins before them end, instead of each being shed."""
    server = WebServer(unique("queueing"), child_env(CHAT_MAX_PENDING_JOINS="2", CHAT_JOIN_RETRY_SECONDS="0.2",
                                                     CHAT_MAX_SOCKETS_PER_USER="1000")).start()
    shed: list[tuple[int, str]] = []
    held = []
    try:
        for _ in range(5):  # as above: until a burst overlapped
            pauses = scrape(f"{server.url}/metrics").get("chat_accept_pauses_total", 0)
            held += await asyncio.gather(*(_join_retrying(server, room.slug, storm_cookies[n % 10], shed)
                                           for n in range(40)))
            if scrape(f"{server.url}/metrics").get("chat_accept_pauses_total", 0) > pauses:
                break
        else:
            raise AssertionError("daphne never stopped accepting with two joins allowed at a time")
        # Shedding them instead would have shed most of the forty, each again on every retry.
        assert len(shed) < 20, shed
    finally:
        await asyncio.gather(*(ws.close() for ws in held))
        server.stop()


async def test_a_shed_socket_costs_no_session_read():
    """Past the limit the socket is shed before anything about it is read: no session, no user."""
    server = WebServer(unique("gate-closed"), child_env(CHAT_MAX_PENDING_JOINS="0"), server="uvicorn").start()
    try:
        for cookie in (None, "not-a-session"):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with chat_socket(server, "any-room", cookie, hello=False) as client:
                    await client.recv(timeout=30)
            assert closed.value.rcvd.code == 1013 and closed.value.rcvd.reason.startswith("retry_after=")
    finally:
        server.stop()
