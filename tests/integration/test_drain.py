"""Graceful drain (contract §6): SIGTERM makes a web instance fail /readyz at once, close its
sockets with 1012 and exit; its clients resume on another instance with no gap."""

import asyncio
import signal
import time
import uuid

import httpx

from tests.conftest import RUN, child_env
from tests.integration.test_sidebar import user_socket
from tests.support import FailoverProxy, WebServer, chat_socket, wait_until


async def send_and_ack(sock, body: str) -> dict:
    await sock.send({"type": "message.send", "body": body, "client_id": uuid.uuid4().hex})
    return await sock.recv_type("ack")


async def test_sigterm_fails_readiness_closes_sockets_with_1012_and_clients_resume_elsewhere(web_b, alice, bob,
                                                                                               room):
    leaving = WebServer(f"web-leaving-{RUN}", child_env(CHAT_DRAIN_GRACE_SECONDS="3")).start()
    balancer = FailoverProxy([leaving.port, web_b.port]).start()
    balanced = WebServer.__new__(WebServer)  # the balancer's address, for chat_socket
    balanced.port, balanced.url = balancer.port, balancer.url
    try:
        assert httpx.get(f"{leaving.url}/readyz").status_code == 200
        async with chat_socket(balanced, room.slug, alice.cookie) as a, \
                chat_socket(web_b, room.slug, bob.cookie) as b, user_socket(leaving, alice.cookie) as home:
            before = [await send_and_ack(b, f"before {n}") for n in range(3)]
            seen = [(await a.recv_type("message"))["seq"] for _ in before]
            assert seen == [ack["seq"] for ack in before]

            leaving.signal(signal.SIGTERM)
            started = time.monotonic()
            ready = await asyncio.to_thread(
                wait_until, lambda: (r := httpx.get(f"{leaving.url}/readyz", timeout=2)).status_code == 503 and r,
                3.0, 0.02, "/readyz to fail")
            # At once: well inside the grace, while the sockets are still open (a balancer's
            # health check moves new clients away before the old ones are sent to reconnect).
            assert ready.json()["failed"] == ["draining"] and time.monotonic() - started < 1.5
            assert a.ws.close_code is None
            assert await a.close_code(timeout=10) == 1012
            assert await home.close_code(timeout=10) == 1012  # the home page's socket too
            during = [await send_and_ack(b, f"during {n}") for n in range(3)]
            assert await asyncio.to_thread(leaving.proc.wait, 20) == 0, leaving.log()[-2000:]

        async with chat_socket(balanced, room.slug, alice.cookie, after=seen[-1]) as again:
            replay = [await again.recv_type("message") for _ in during]
            assert [m["seq"] for m in replay] == [ack["seq"] for ack in during]
            await again.recv_type("resumed")
            async with chat_socket(web_b, room.slug, bob.cookie) as b:
                after = await send_and_ack(b, "after")
            assert (await again.recv_type("message"))["seq"] == after["seq"]
            assert len([f for f in again.frames if f["type"] == "message"]) == len(during) + 1
        assert "SIGTERM: failing /readyz" in leaving.log()
    finally:
        balancer.stop()
        leaving.stop()


async def test_a_user_gone_with_a_drained_instance_is_announced_before_it_exits(web_b, alice, bob, room):
    """daphne cancels every application once the drain hands SIGTERM back: the sockets' cleanups,
    their leave's announcement included, end first, or a user who does not come back stays online
    for the others."""
    leaving = WebServer(f"web-gone-{RUN}", child_env(CHAT_DRAIN_GRACE_SECONDS="0.5")).start()
    try:
        async with chat_socket(web_b, room.slug, bob.cookie) as b:
            async with chat_socket(leaving, room.slug, alice.cookie) as a:
                while alice.username not in (await b.recv_type("presence", timeout=20))["online"]:
                    pass
                leaving.signal(signal.SIGTERM)
                assert await a.close_code(timeout=10) == 1012
            assert await asyncio.to_thread(leaving.proc.wait, 20) == 0, leaving.log()[-2000:]
            while alice.username in (await b.recv_type("presence", timeout=10))["online"]:
                pass
    finally:
        leaving.stop()
