"""The per-process room hub on the real Redis channel layer: two hubs stand for two instances."""

import asyncio
import time
from dataclasses import dataclass, field

from channels.layers import get_channel_layer

from chat import protocol
from chat.hub import RoomHub
from chat.hub_heartbeat import presence_keep_alive
from chat.roomstate import HUB_GROUP, room_group, room_state
from chat.services import presence
from tests.support import unique


@dataclass(eq=False)
class Sink:
    """A local connection as the hub sees it, recording what it is handed."""

    room_id: int
    user_id: int = 1
    username: str = "u"
    conn_id: str = field(default_factory=lambda: unique("conn"))
    got: list = field(default_factory=list)
    runs: list = field(default_factory=list)  # frames handed over per call
    closed: list = field(default_factory=list)
    present: bool = False

    def deliver(self, texts, seqs):
        self.got.extend(zip(seqs, texts, strict=True))
        self.runs.append(len(texts))

    def close_with(self, code):
        self.closed.append(code)


async def until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_one_publish_reaches_every_local_socket_of_the_room_on_every_hub():
    layer = get_channel_layer()
    hub_a, hub_b = RoomHub(), RoomHub()
    room_id = int(unique("1").split("-")[1], 16) % 10**9
    a1, a2, b1 = Sink(room_id), Sink(room_id), Sink(room_id)
    elsewhere = Sink(room_id + 1)
    for hub, sink in ((hub_a, a1), (hub_a, a2), (hub_b, b1), (hub_b, elsewhere)):
        await hub.join(sink)
    await layer.group_send(room_group(room_id), {"type": "room.frame", "room": room_id, "text": "T", "seq": "7"})
    await until(lambda: a1.got and a2.got and b1.got)
    assert a1.got == a2.got == b1.got == [(7, "T")]
    assert elsewhere.got == []
    # Excluding the typist's own socket; leaving unsubscribes the hub once its last socket is gone.
    await layer.group_send(room_group(room_id), {"type": "room.frame", "room": room_id, "text": "U", "seq": None,
                                                 "exclude": a1.conn_id})
    await until(lambda: len(a2.got) == 2 and len(b1.got) == 2)
    assert len(a1.got) == 1
    await hub_b.leave(b1)
    assert room_id not in hub_b.rooms
    await layer.group_send(room_group(room_id), {"type": "room.frame", "room": room_id, "text": "V", "seq": "9"})
    await until(lambda: len(a2.got) == 3)
    assert len(b1.got) == 2


async def test_messages_received_in_one_turn_go_to_each_socket_as_one_run_in_order():
    hub = RoomHub()
    room_id = int(unique("1").split("-")[1], 16) % 10**9
    first, second = Sink(room_id), Sink(room_id)
    await hub.join(first)
    await hub.join(second)

    def message(seq):
        return {"type": "room.frame", "room": room_id, "text": f"m{seq}", "seq": str(seq), "prev": str(seq - 1)}

    for seq in (1, 2, 3):
        hub.dispatch(message(seq))
    assert first.got == [], "messages wait for the end of the event loop's turn"
    # A frame that is not a message goes out at once, after the messages received before it.
    hub.dispatch({"type": "room.frame", "room": room_id, "text": "typing", "seq": None})
    assert first.runs == second.runs == [3, 1]
    hub.dispatch(message(4))
    await until(lambda: len(second.runs) == 3)
    assert first.got == second.got == [(1, "m1"), (2, "m2"), (3, "m3"), (None, "typing"), (4, "m4")]
    assert first.runs == [3, 1, 1]


async def test_user_events_reach_every_socket_of_that_user_on_every_hub():
    layer = get_channel_layer()
    hub_a, hub_b = RoomHub(), RoomHub()
    mallory, someone_else = 10**12 + 666, 10**12 + 7
    mallory_a, mallory_b = Sink(10**9 + 1, user_id=mallory), Sink(10**9 + 2, user_id=mallory)
    other = Sink(10**9 + 1, user_id=someone_else)
    await hub_a.join(mallory_a)
    await hub_a.join(other)
    await hub_b.join(mallory_b)
    await layer.group_send(HUB_GROUP, {"type": "user.close", "user": 10**12 + 666, "code": 4403})
    await until(lambda: mallory_a.closed and mallory_b.closed)
    assert other.closed == []
    await layer.group_send(HUB_GROUP, {"type": "user.frame", "user": 10**12 + 7, "text": "R", "exclude": None})
    await until(lambda: other.got)
    assert other.got == [(None, "R")] and mallory_a.got == []


async def test_a_bad_event_does_not_stop_the_hub():
    layer = get_channel_layer()
    hub = RoomHub()
    sink = Sink(5)
    await hub.join(sink)
    await layer.group_send(room_group(5), {"type": "room.frame", "room": "not-a-number", "text": "X"})
    await layer.group_send(room_group(5), {"type": "room.frame", "room": 5, "text": "ok", "seq": 1})
    await until(lambda: sink.got)
    assert sink.got == [(1, "ok")]


async def test_a_message_the_hub_missed_sends_the_rooms_sockets_to_resume_instead_of_skipping_it():
    layer = get_channel_layer()
    hub = RoomHub()
    room_id = int(unique("1").split("-")[1], 16) % 10**9
    first, second = Sink(room_id), Sink(room_id)
    await hub.join(first)
    await hub.join(second)

    def message(seq, prev):
        return {"type": "room.frame", "room": room_id, "text": f"m{seq}", "seq": str(seq), "prev": str(prev)}

    await layer.group_send(room_group(room_id), message(10, 9))
    await layer.group_send(room_group(room_id), message(11, 10))
    await until(lambda: len(second.got) == 2)
    # Seq 12 never arrived (a lost publish): 13 must not be delivered over the hole.
    await layer.group_send(room_group(room_id), message(13, 12))
    await until(lambda: first.closed and second.closed)
    assert first.closed == second.closed == [1012]
    assert [seq for seq, _ in first.got] == [10, 11]


async def test_a_restarted_room_counter_sends_the_rooms_sockets_to_resume():
    """After Redis lost the counter, the first new message cannot name its predecessor (prev -1):
    whatever this instance had not received from the old Redis comes back through resume."""
    layer = get_channel_layer()
    hub = RoomHub()
    room_id = int(unique("1").split("-")[1], 16) % 10**9
    sink = Sink(room_id)
    await hub.join(sink)
    await layer.group_send(room_group(room_id), {"type": "room.frame", "room": room_id, "text": "a", "seq": "5",
                                                 "prev": "4"})
    await until(lambda: sink.got)
    await layer.group_send(room_group(room_id), {"type": "room.frame", "room": room_id, "text": "b",
                                                 "seq": "1764400000000001", "prev": "-1"})
    await until(lambda: sink.closed)
    assert sink.got == [(5, "a")] and sink.closed == [1012]


async def test_a_new_epoch_is_a_gap_the_rooms_sockets_resume():
    hub = RoomHub()
    room_id = int(unique("1").split("-")[1], 16) % 10**9
    sink = Sink(room_id)
    await hub.join(sink)

    def message(seq, prev, epoch):
        return {"type": "room.frame", "room": room_id, "text": f"m{seq}", "seq": str(seq), "prev": str(prev),
                "epoch": epoch}

    hub.dispatch(message(1, -1, "0"))
    hub.dispatch(message(2, 1, "0"))
    await until(lambda: len(sink.got) == 2)
    # Another epoch (the room's state lost or replaced, a failover): a gap even where `prev` matches.
    hub.dispatch(message(3, 2, "1764530000000000"))
    assert sink.closed == [1012] and len(sink.got) == 2


async def test_a_heartbeat_while_a_socket_joins_leaves_its_users_arrival_to_be_announced(room):
    """A socket is in its hub a moment before its join enters presence (the room subscribed, its
    access read again). A heartbeat in that moment must not put its user online: the join would
    find them online already, announce nothing, and the other instances' sockets never list them."""
    hub_a, hub_b = RoomHub(), RoomHub()
    watching = Sink(room.id, username=unique("watching"), present=True)  # on the other instance
    await hub_b.join(watching)
    await room_state().presence_join(room.id, watching.conn_id, watching.username)
    joining = Sink(room.id, username=unique("joining"))
    await hub_a.join(joining)

    # The heartbeats' refreshes, landing between the hub's join and presence's.
    for hub in (hub_a, hub_b):
        await presence_keep_alive(hub, room_state())
    who = presence.Participant(user_id=joining.user_id, username=joining.username, is_staff=False, room_id=room.id,
                               room_slug=room.slug, room_name=room.name, room_private=False, conn_id=joining.conn_id)
    hello = await presence.presence_arrive(who)

    assert hello["online"] == sorted([watching.username, joining.username])
    await until(lambda: any(f'"{joining.username}"' in text for _, text in watching.got), timeout=10)


async def test_a_heartbeat_does_not_put_back_a_socket_that_left_while_it_ran(room):
    """The heartbeat takes its list of sockets, then makes its calls (one per thousand sockets): a
    socket that leaves in between must not be put back online, or its user would show online again
    for a whole TTL after leaving."""
    state = room_state()
    hub = RoomHub()
    staying = Sink(room.id, username=unique("staying"), present=True)
    leaving = Sink(room.id, username=unique("leaving"), present=True)
    for sink in (staying, leaving):
        await hub.join(sink)
        await state.presence_join(room.id, sink.conn_id, sink.username)
    present = {c.conn_id: c for c in hub.present()}  # the heartbeat's list (hub_heartbeat.presence_keep_alive)...
    entries = [(c.room_id, c.conn_id, c.username) for c in present.values()]
    leaving.present = False  # ...then the socket leaves, as ChatConsumer does
    await hub.leave(leaving)
    assert await state.presence_leave(room.id, leaving.conn_id, leaving.username)

    await state.presence_refresh(entries, keep=lambda entry: present[entry[1]].present)

    assert await state.presence_online(room.id) == [staying.username]


async def test_an_announcement_goes_out_only_while_its_online_list_is_current(room):
    """Two instances announcing at once must not leave the sockets with the older list: a list goes
    out only if it is still who is online when published, so the room's frames arrive in the order
    their lists were read. The frame is the one protocol.presence_frame makes."""
    state = room_state()
    hub = RoomHub()
    sink = Sink(room.id)
    await hub.join(sink)
    names = ["zoë", "bob.smith@example.com", "a+b-c_d", "Ærø"]
    for n, name in enumerate(names):
        await state.presence_join(room.id, f"conn-{n}", name)

    await state.presence_announce(room.id)
    await until(lambda: sink.got)
    assert sink.got == [(None, protocol.encode(protocol.presence_frame(online=sorted(names))))]

    # Another instance's list, read before this leave and published after it: refused.
    shard, prefix = state._room(room.id)
    await state.presence_leave(room.id, "conn-0", names[0])
    stale = await shard.presence_publish(keys=[f"{prefix}:presence", state.room_channel(room.id)],
                                         args=[time.time(), b"stale", *sorted(names)])
    assert stale == 0
    await state.presence_announce(room.id)
    await until(lambda: len(sink.got) == 2)
    assert sink.got[1] == (None, protocol.encode(protocol.presence_frame(online=sorted(names[1:]))))

    for n, name in enumerate(names[1:], start=1):
        await state.presence_leave(room.id, f"conn-{n}", name)
    await state.presence_announce(room.id)
    await until(lambda: len(sink.got) == 3)
    assert sink.got[2] == (None, '{"type":"presence","online":[]}')
