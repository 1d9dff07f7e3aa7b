"""Deploys and crashes under load: a rolling restart of both web instances (SIGTERM, drain, start
again) and a worker killed with -9 mid-stream. Afterwards Postgres holds every acked message exactly
once in seq order, and every connected client saw every message exactly once."""

import asyncio
import signal
import time

import pytest
from django.db import connections

from chat.bus import records
from chat.bus.topics import ensure_topics
from chat.models import Message
from tests.conftest import RUN, child_env, make_room, make_user
from tests.integration.test_worker import created_records, produce, run_worker
from tests.support import FailoverProxy, StayingReader, StayingSender, WebServer, unique, unique_topic, wait_until

pytestmark = pytest.mark.faults


def restart(server: WebServer) -> WebServer:
    """SIGTERM (graceful drain), wait for a clean exit, start a new instance on the same port."""
    server.signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.log()[-2000:]
    return WebServer(server.name + "-next", server.env, port=server.port).start()


async def test_rolling_restart_of_both_instances_under_load_loses_nothing(worker, alice, bob, room):
    env = child_env(CHAT_DRAIN_GRACE_SECONDS="0.3")
    web = [WebServer(f"roll-a-{RUN}", env).start(), WebServer(f"roll-b-{RUN}", env).start()]
    balancer = FailoverProxy([server.port for server in web], rotate=True).start()
    stop = asyncio.Event()
    readers = [StayingReader(balancer, room.slug, user.cookie) for user in (alice, bob, alice, bob)]
    senders = [StayingSender(balancer, room.slug, user.cookie, count=150) for user in (alice, bob)]
    try:
        reading = [asyncio.ensure_future(reader.run(stop)) for reader in readers]
        await asyncio.sleep(0)  # readers connect first
        deadline = time.monotonic() + 120
        sending = asyncio.gather(*(sender.run(deadline) for sender in senders))
        for index in range(len(web)):
            threshold = 60 * (index + 1)
            await asyncio.to_thread(wait_until, lambda t=threshold: sum(len(s.acked) for s in senders) > t, 60,
                                    0.05, "traffic before the restart")
            web[index] = await asyncio.to_thread(restart, web[index])
        await sending

        acked = sorted(seq for sender in senders for _, seq in sender.acked.values())
        assert len(acked) == 300 and len(set(acked)) == 300
        await asyncio.to_thread(wait_until, lambda: all(set(r.seqs) >= set(acked) for r in readers), 30, 0.1,
                                "every reader to have every acked message")
        stop.set()
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
    finally:
        stop.set()
        balancer.stop()
        for server in web:
            server.stop()

    for reader in readers:
        doubled = sorted({seq for seq in reader.seqs if reader.seqs.count(seq) > 1})
        assert reader.seqs == sorted(set(reader.seqs)), (
            f"a reader saw {doubled} twice or out of order: "
            f"{[t for t in reader.trace if abs(t[2] - (doubled or [0])[0]) < 4]}")
        assert reader.reconnects >= 1, "the restarts should have moved every reader at least once"
    ids = {message_id for sender in senders for message_id, _ in sender.acked.values()}
    # In an async test, Django's connection is context-local and may predate the earlier fault
    # tests' Postgres restarts: start from a fresh one.
    connections.close_all()
    wait_until(lambda: Message.objects.filter(room=room).count() >= len(ids), 60, message="all acked stored")
    stored = list(Message.objects.filter(room=room).order_by("seq").values_list("id", "seq"))
    assert {str(message_id) for message_id, _ in stored} == ids
    assert [seq for _, seq in stored] == acked


def test_a_worker_killed_mid_stream_and_restarted_stores_everything_once():
    topic = unique_topic("kill9")
    ensure_topics(topic=topic, partitions=2)
    author = make_user("author")
    rooms = [make_room(author), make_room(author)]
    batch = created_records(rooms, author, 3000)
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    group = unique("group")
    # Small batches: the kill must land while most of the stream is still unwritten.
    first = run_worker(topic, group, unique("wkill"), 30, "--max-records", "200")
    wait_until(lambda: Message.objects.filter(room__in=rooms).exists(), 60, 0.01, "the first rows")
    first.kill()  # SIGKILL: no commit, no cleanup
    assert Message.objects.filter(room__in=rooms).count() < len(batch), "killed too late to prove anything"
    # The group waits out the dead member's session before it hands its partitions over.
    second = run_worker(topic, group, unique("wkill2"), idle=600)
    wait_until(lambda: Message.objects.filter(room__in=rooms).count() >= len(batch), 90, 0.2,
               "the restarted worker to catch up")
    assert second.stop() == 0, second.log()[-2000:]
    assert Message.objects.filter(room__in=rooms).count() == len(batch)
    for room in rooms:
        seqs = list(Message.objects.filter(room=room).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, 3001))
