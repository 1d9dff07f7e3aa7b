"""Hostile input against a live socket: whatever a client throws, it gets a contract error or a
contract close code, never a server error, and the room keeps working for everyone else."""

import asyncio
import json
import uuid

import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import protocol
from tests.support import chat_socket

ERROR_CODES = {"invalid_json", "invalid_frame", "empty_body", "too_long", "rate_limited", "muted", "forbidden",
               "not_found", "not_persisted"}
CLOSE_CODES = {protocol.CLOSE_TOO_BIG, protocol.CLOSE_UNSUPPORTED}
SERVER_TYPES = {"hello", "message", "ack", "message.edited", "message.deleted", "typing", "presence", "resumed",
                "pong", "error", "read",
                # once the socket asked with sidebar.watch (docs/protocol.md, the sidebar)
                "sidebar.changed", "sidebar.activity", "sidebar.read"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
known_types = st.sampled_from([*protocol.CLIENT_FRAMES, "message", "hello", "", "MESSAGE.SEND", "x" * 500])
field_names = st.sampled_from(["body", "client_id", "id", "reason", "active", "after", "seq", "type"])
odd_text = st.text(alphabet=st.sampled_from(["a", "\u202e", "\u200b", "\x00", "😀", "\ufeff", "<", "\n", " "]),
                   max_size=30)
shaped = st.fixed_dictionaries(
    {"type": known_types},
    optional={name: json_values | odd_text for name in ["body", "client_id", "id", "reason", "active", "after",
                                                        "seq"]},
).map(json.dumps)
frames = st.one_of(
    st.text(max_size=200),  # anything at all
    json_values.map(json.dumps),  # valid JSON of any shape
    shaped,  # frames that look almost right
    st.integers(min_value=1, max_value=200).map(lambda depth: "[" * depth * 100 + "]" * depth * 100),  # deep nesting
    st.just("x" * (protocol.MAX_FRAME_BYTES + 1)),  # too big
    st.binary(min_size=1, max_size=20),  # binary frame
)


class Target:
    """One socket kept open across examples (reopened after a contract close)."""

    def __init__(self, server, slug: str, cookie: str) -> None:
        self.server, self.slug, self.cookie = server, slug, cookie
        self.loop = asyncio.new_event_loop()
        self.context = self.sock = None

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    async def open(self) -> None:
        self.context = chat_socket(self.server, self.slug, self.cookie, after=0)
        self.sock = await self.context.__aenter__()
        await self.sock.recv_type("resumed")

    async def throw(self, frame: str | bytes) -> None:
        if self.sock is None:
            await self.open()
        before = len(self.sock.frames)
        marker = uuid.uuid4().hex
        try:
            await self.sock.ws.send(frame)
            # A ping after it: the pong proves the frame was handled and the socket still answers.
            await self.sock.send({"type": "ping", "marker": marker})
            await self.sock.recv_type("pong", timeout=10)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            assert code in CLOSE_CODES, f"closed with {code} after {frame[:80]!r}"
            self.sock = None
            return
        for reply in self.sock.frames[before:]:
            assert reply["type"] in SERVER_TYPES, reply
            if reply["type"] == "error":
                assert reply["code"] in ERROR_CODES and reply["detail"], reply

    def close(self) -> None:
        if self.sock is not None:
            self.run(self.sock.close())
        self.loop.close()


def test_random_frames_get_contract_answers_and_the_room_keeps_working(web_a, web_b, alice, bob, room):
    target = Target(web_a, room.slug, alice.cookie)
    logs_before = len(web_a.log()), len(web_b.log())

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=frames)
    def throw(frame):
        target.run(target.throw(frame))

    try:
        throw()
    finally:
        target.close()

    async def others_still_chat():
        async with chat_socket(web_b, room.slug, bob.cookie) as b, chat_socket(web_a, room.slug, alice.cookie) as a:
            await b.send({"type": "message.send", "body": "still here", "client_id": uuid.uuid4().hex})
            assert (await b.recv_type("ack"))["client_id"]
            assert (await a.recv_type("message"))["body"] == "still here"

    asyncio.run(others_still_chat())
    new_log = web_a.log()[logs_before[0]:] + web_b.log()[logs_before[1]:]
    assert "Traceback" not in new_log and "Exception inside application" not in new_log, new_log[-3000:]
