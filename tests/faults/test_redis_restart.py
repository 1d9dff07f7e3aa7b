"""Redis restarts empty while users chat: live delivery resumes (clients reconnect and resume),
no acked message is lost or doubled, and no seq is ever handed out twice."""

import asyncio
import subprocess
import time

import pytest
from django.db import connections

from chat.models import Message
from tests.support import ROOT, FailoverProxy, StayingReader, StayingSender, wait_until

pytestmark = pytest.mark.faults


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=180)


async def test_redis_restarting_empty_loses_and_doubles_nothing(web_a, web_b, worker, alice, bob, room):
    balancer = FailoverProxy([web_a.port, web_b.port], rotate=True).start()
    stop = asyncio.Event()
    readers = [StayingReader(balancer, room.slug, user.cookie) for user in (alice, bob, alice)]
    senders = [StayingSender(balancer, room.slug, user.cookie, count=120, interval=0.05) for user in (alice, bob)]
    try:
        reading = [asyncio.ensure_future(reader.run(stop)) for reader in readers]
        sending = asyncio.gather(*(sender.run(time.monotonic() + 120) for sender in senders))
        await asyncio.to_thread(wait_until, lambda: sum(len(s.acked) for s in senders) > 60, 60, 0.05, "traffic")
        await asyncio.to_thread(services, "down", "redis")
        await asyncio.sleep(1)
        await asyncio.to_thread(services, "up", "redis")  # no persistence: it comes back empty
        await sending
        acked = sorted(seq for sender in senders for _, seq in sender.acked.values())
        assert len(acked) == 240 and len(set(acked)) == 240, "a seq was handed out twice"
        try:
            await asyncio.to_thread(wait_until, lambda: all(set(r.seqs) >= set(acked) for r in readers), 60, 0.1,
                                    "every reader to have every acked message")
        except AssertionError:
            report = [f"reader {n}: {r.reconnects} reconnects, {len(r.seqs)} seen, missing "
                      f"{sorted(set(acked) - set(r.seqs))[:20]}, last frames {r.trace[-3:]}"
                      for n, r in enumerate(readers)]
            raise AssertionError("a reader lacks acked messages after 60 s:\n" + "\n".join(report)) from None
    finally:
        stop.set()
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
        balancer.stop()
    for reader in readers:
        assert reader.seqs == sorted(set(reader.seqs)), "a reader saw a message twice or out of order"
    connections.close_all()  # this async test's connection may predate earlier Postgres restarts
    ids = {message_id for sender in senders for message_id, _ in sender.acked.values()}
    wait_until(lambda: Message.objects.filter(room=room).count() >= len(ids), 60, message="all acked stored")
    stored = list(Message.objects.filter(room=room).order_by("seq").values_list("id", "seq"))
    assert {str(message_id) for message_id, _ in stored} == ids
    assert [seq for _, seq in stored] == acked
