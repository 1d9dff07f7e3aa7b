"""/readyz (contract §3) while the real services stop and come back: without Redis the instance is
not ready; without Kafka or Postgres it stays ready (live chat goes on), naming what is degraded."""

import asyncio
import subprocess
import time
import uuid

import httpx
import pytest
import websockets

from tests.support import ROOT, chat_socket, wait_until

pytestmark = pytest.mark.faults


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=180)


def readiness(server) -> tuple[int, dict]:
    response = httpx.get(f"{server.url}/readyz", timeout=15)
    return response.status_code, response.json()


def fully_ready(server) -> bool:
    status, body = readiness(server)
    return status == 200 and body["ready"] and not body["degraded"]


def ready_but_degraded(server, degraded: list[str]):
    """The probe's body once `degraded` is exactly that; every probe meanwhile answers 200."""
    status, body = readiness(server)
    assert status == 200 and body["ready"] and not body["failed"], body
    return sorted(body["degraded"]) == degraded and body


async def sockets_served(server, slug: str, cookie: str, timeout: float) -> None:
    """Wait until a socket is let in (hello) again, as a reconnecting client would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with chat_socket(server, slug, cookie):
                return
        except (websockets.ConnectionClosed, OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_without_redis_the_instance_is_not_ready_and_recovers(web_a, alice, room):
    wait_until(lambda: fully_ready(web_a), 60, 0.5, "ready before the outage")
    services("down", "redis")
    try:
        _, body = wait_until(lambda: (r := readiness(web_a))[0] == 503 and r, 30, 0.5, "503 without Redis")
        assert body["ready"] is False and body["failed"] == ["redis"] and body["degraded"] == [], body
        assert httpx.get(f"{web_a.url}/healthz", timeout=5).status_code == 200  # alive, just not ready
    finally:
        services("up", "redis")
    wait_until(lambda: fully_ready(web_a), 60, 0.5, "ready again after Redis is back")
    await sockets_served(web_a, room.slug, alice.cookie, 30)  # and serving sockets again


async def test_kafka_and_postgres_out_leave_the_instance_ready_naming_them(web_a, alice, bob, room):
    wait_until(lambda: fully_ready(web_a), 60, 0.5, "ready before the outage")
    services("down", "kafka")
    try:
        wait_until(lambda: ready_but_degraded(web_a, ["kafka"]), 30, 0.5, "kafka degraded")
        # Ready is true: the instance still serves live chat (the ack waits for Kafka).
        async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_a, room.slug, bob.cookie) as b:
            await a.send({"type": "message.send", "body": "while Kafka is out", "client_id": uuid.uuid4().hex})
            assert (await b.recv_type("message"))["body"] == "while Kafka is out"
        services("down", "postgres")
        try:
            wait_until(lambda: ready_but_degraded(web_a, ["database", "kafka"]), 30, 0.5, "both degraded")
        finally:
            services("up", "postgres")
        wait_until(lambda: ready_but_degraded(web_a, ["kafka"]), 60, 0.5, "only kafka degraded again")
    finally:
        services("up", "kafka")
    wait_until(lambda: fully_ready(web_a), 90, 0.5, "nothing degraded after Kafka is back")
