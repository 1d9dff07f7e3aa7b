"""Reactions while the worker is killed with -9 and another takes its place: for every message,
Postgres ends up with the reaction list every client saw last, live, on either instance."""

import asyncio
import contextlib
import random
import signal

import pytest
from django.db import connections

from chat.bus.topics import ensure_topics
from chat.models import Message
from tests.conftest import RUN, child_env, make_room, make_user, session_cookie
from tests.integration.test_rich_messages import say
from tests.integration.test_worker import run_worker
from tests.support import WebServer, chat_socket, unique, unique_topic, wait_until

pytestmark = pytest.mark.faults

GLYPHS = ("👍", "🎉", "❤️", "👀")


class Reactor:
    """One user's socket: adds and removes reactions at random and keeps the last reaction list it
    saw for each message."""

    def __init__(self, sock, seed: int) -> None:
        self.sock, self.random = sock, random.Random(seed)
        self.seen: dict[str, list] = {}
        self.sent = 0
        self.ponged = asyncio.Event()

    async def churn(self, message_ids: list[str], stop: asyncio.Event) -> None:
        while not stop.is_set():
            kind = "reaction.add" if self.random.random() < 0.6 else "reaction.remove"
            await self.sock.send({"type": kind, "id": self.random.choice(message_ids),
                                  "emoji": self.random.choice(GLYPHS)})
            self.sent += 1
            await asyncio.sleep(0.02)

    async def read_until(self, body: str) -> None:
        """Note every reaction frame until the message `body` arrives (sent after every change)."""
        while True:
            frame = await self.sock.recv_type("reaction", "message", "error", "pong", timeout=30)
            if frame["type"] == "reaction":
                self.seen[frame["id"]] = frame["reactions"]
            elif frame["type"] == "pong":
                self.ponged.set()
            elif frame["type"] == "error":  # a change refused is not made: what the clients see stays true
                # unavailable: the message was changed by many at once for 3 s (services.messages)
                assert frame["code"] in ("too_many_reactions", "unavailable"), frame
            elif frame["body"] == body:
                return


async def test_stored_reactions_are_what_every_client_saw_across_a_worker_kill():
    connections.close_all()  # this async context's connection may predate earlier Postgres restarts
    topic, group = unique_topic("reactions"), unique("group")
    ensure_topics(topic=topic, partitions=2)
    env = child_env(KAFKA_TOPIC=topic, KAFKA_CONSUMER_GROUP=group, CHAT_REACTION_RATE_LIMIT="1000/1s")
    web = [WebServer(f"react-a-{RUN}", env).start(), WebServer(f"react-b-{RUN}", env).start()]
    worker = run_worker(topic, group, unique("wreact1"), 300)
    successor = None
    users = [make_user("reactor") for _ in range(6)]
    room = make_room(users[0])
    try:
        async with contextlib.AsyncExitStack() as stack:
            socks = [await stack.enter_async_context(chat_socket(web[n % 2], room.slug, session_cookie(user)))
                     for n, user in enumerate(users)]
            acks = [await say(socks[0], f"react to {n}") for n in range(4)]
            ids = [ack["id"] for ack in acks]
            reactors = [Reactor(sock, seed) for seed, sock in enumerate(socks)]
            stop = asyncio.Event()
            churning = [asyncio.ensure_future(reactor.churn(ids, stop)) for reactor in reactors]
            reading = [asyncio.ensure_future(reactor.read_until("the end")) for reactor in reactors]

            def stored_changes() -> int:
                return sum(rev - 1 for rev in Message.objects.filter(id__in=ids).values_list("rev", flat=True))

            def sent() -> int:
                return sum(reactor.sent for reactor in reactors)

            await asyncio.to_thread(wait_until, lambda: stored_changes() > 100, 60, 0.1, "reactions stored")
            worker.signal(signal.SIGKILL)
            worker.proc.wait(10)
            sent_at_kill = sent()
            await asyncio.to_thread(wait_until, lambda: sent() > sent_at_kill + 300, 60, 0.05,
                                    "reactions sent while no worker runs")
            successor = run_worker(topic, group, unique("wreact2"), 300)
            await asyncio.to_thread(wait_until, lambda: "partitions assigned: 0,1" in successor.log(), 60, 0.1,
                                    "the new worker to take the partitions")
            sent_at_takeover = sent()
            await asyncio.to_thread(wait_until, lambda: sent() > sent_at_takeover + 300, 60, 0.05,
                                    "reactions sent after the new worker took over")
            stop.set()
            await asyncio.gather(*churning)
            for reactor, reader in zip(reactors, reading, strict=True):  # its changes are made once its pong is back
                await reactor.sock.send({"type": "ping"})
                pong = asyncio.ensure_future(reactor.ponged.wait())
                done, _ = await asyncio.wait({pong, reader}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    reader.result()  # the reader stopped before its pong: what it failed on
                assert pong in done, f"no pong within 30 s on a socket that saw {len(reactor.seen)} messages' reactions"
            # Published on the room's channel after every change: whoever reads it has read them all.
            await socks[0].send({"type": "message.send", "body": "the end", "client_id": unique("c")})
            await asyncio.wait_for(asyncio.gather(*reading), 30)

        first = reactors[0].seen
        assert set(first) == set(ids), "every message got reactions"
        for reactor in reactors[1:]:
            assert reactor.seen == first, "every client ends with the same lists"

        def stored() -> dict:
            return {str(m.id): m.reactions for m in Message.objects.filter(id__in=ids)}

        await asyncio.to_thread(wait_until, lambda: stored() == first, 60, 0.2, "Postgres to hold what clients saw")
        assert stored_changes() > 600, "the changes were stored through the kill"
    finally:
        for process in (worker, successor, *web):
            if process is not None:
                process.stop()
