"""With Kafka stopped, live chat keeps flowing and the event loop stays responsive; acks come back
when Kafka does, and what the producer gave up on is reported as not_persisted and can be re-sent."""

import asyncio
import subprocess
import time

import pytest

from chat.models import Message
from tests.support import ROOT, chat_socket, unique, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("worker")]


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=180)


async def test_kafka_stopped_live_chat_flows_and_nothing_acked_is_lost(web_a, web_b, alice, bob, room):
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        await a.send({"type": "message.send", "body": "warm up", "client_id": unique("c")})
        await a.recv_type("ack")
        await b.recv_type("message")
        await asyncio.to_thread(services, "down", "kafka")
        try:
            sent = []
            for n in range(5):
                cid = unique("c")
                sent.append(cid)
                await a.send({"type": "message.send", "body": f"while kafka is down {n}", "client_id": cid})
                live = await b.recv_type("message", timeout=5)
                assert live["client_id"] == cid
            # The loop still answers at once while produce calls wait on the missing broker.
            started = time.monotonic()
            await a.send({"type": "ping"})
            await a.recv_type("pong", timeout=2)
            assert time.monotonic() - started < 1.0
            outcomes = {}
            while len(outcomes) < len(sent):
                frame = await a.recv_type("ack", "error", timeout=30)
                outcomes[frame["client_id"]] = frame
            assert {f["type"] for f in outcomes.values()} == {"error"}
            assert {f["code"] for f in outcomes.values()} == {"not_persisted"}
        finally:
            await asyncio.to_thread(services, "up", "kafka")
        # Re-sent with the same client_id once Kafka is back, as a client does until it gets its ack
        # (the producer may need a moment to reconnect): acked with the original id and seq.
        deadline = time.monotonic() + 60
        for cid in sent:
            while True:
                await a.send({"type": "message.send", "body": "re-sent", "client_id": cid})
                reply = await a.recv_type("ack", "error", timeout=30)
                assert reply["client_id"] == cid
                if reply["type"] == "ack":
                    break
                assert reply["code"] == "not_persisted" and time.monotonic() < deadline, reply
        acked = [f for f in a.frames if f["type"] == "ack"]
    wait_until(lambda: Message.objects.filter(room=room).count() == 6, 60, message="every acked message stored")
    stored = {m.client_id: m for m in Message.objects.filter(room=room)}
    for ack in acked:
        assert str(stored[ack["client_id"]].id) == ack["id"] and stored[ack["client_id"]].seq == ack["seq"]
