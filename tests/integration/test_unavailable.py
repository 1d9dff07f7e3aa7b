"""What a request gets while a service it needs does not answer: the server tells the client to
try again (docs/protocol.md) and logs one warning line, no traceback; the instance goes on serving
whatever does not need that service.

- A frame a store fails (here Postgres, out of reach behind a cut connection): `error unavailable`
  and a retry hint; the socket stays open and works again once the store is back.
- A join (Postgres for the session, a Redis shard for the room): closed with 1013 and a
  `retry_after` hint, as a shed join is.
- An API request: 503 `unavailable` with Retry-After, when nothing was done; a change that was
  stored but whose live effect Redis could not carry is answered as done."""

import os
import re
import secrets
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import websockets

from chat.models import Message, Room
from tests.conftest import OWNER_DATABASE_URL, RUN, child_env
from tests.integration.test_rich_messages import say
from tests.support import FailoverProxy, WebServer, chat_socket, free_port, wait_until


def through(proxy: FailoverProxy, url: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


async def test_a_frame_postgres_fails_gets_unavailable_and_the_socket_goes_on(worker, alice, room):
    postgres = urlsplit(os.environ["DATABASE_URL"]).port or 5432
    proxy = FailoverProxy([postgres]).start()
    web = WebServer(f"unavailable-{RUN}", child_env(DATABASE_URL=through(proxy, os.environ["DATABASE_URL"]))).start()
    try:
        async with chat_socket(web, room.slug, alice.cookie) as sock:
            ack = await say(sock, "report me later")
            wait_until(lambda: Message.objects.filter(id=ack["id"]).exists(), 15, message="the message stored")
            proxy.cut()  # Postgres out of reach: a report needs it
            await sock.send({"type": "message.report", "id": ack["id"], "reason": "spam"})
            error = await sock.recv_type("error", timeout=30)
            assert error["code"] == "unavailable" and error["retry_after"] > 0, error
            # Redis and Kafka are up: the socket and sends go on meanwhile.
            await say(sock, "still here")
            proxy.restore()
            await sock.send({"type": "message.report", "id": ack["id"], "reason": "spam"})
            await sock.send({"type": "ping"})
            frame = await sock.recv_type("error", "pong", timeout=30)
            assert frame["type"] == "pong", f"the report failed once Postgres was back: {frame}"
    finally:
        web.stop()
        proxy.stop()


def unreachable(service: str) -> dict[str, str]:
    dead = free_port()  # nothing listens there
    if service == "redis":
        return child_env(REDIS_URL=f"redis://127.0.0.1:{dead}/0")
    return child_env(DATABASE_URL=re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{dead}/", OWNER_DATABASE_URL))


@pytest.mark.parametrize("server_kind", ["daphne", "uvicorn"])
@pytest.mark.parametrize("service", ["postgres", "redis"])
async def test_a_join_while_a_service_does_not_answer_is_told_to_try_again_later(alice, room, service, server_kind):
    server = WebServer(f"web-unavailable-{service}-{server_kind}-{RUN}", unreachable(service), server_kind).start()
    try:
        url = f"ws://127.0.0.1:{server.port}/ws/chat/{room.slug}/"
        for _ in range(2):  # the instance goes on answering each join the same way
            async with websockets.connect(url, origin=server.url, open_timeout=10,
                                          additional_headers={"Cookie": f"sessionid={alice.cookie}"}) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd.code == 1013, closed.value
            hint = re.fullmatch(r"retry_after=([\d.]+)", closed.value.rcvd.reason)
            assert hint and 1 <= float(hint.group(1)) <= 3, closed.value.rcvd.reason  # 2 s (the default), spread
        log = server.log()
        assert "told to try again later" in log and "Traceback" not in log, log[-3000:]
    finally:
        server.stop()


async def test_an_api_request_while_postgres_does_not_answer_is_a_503_to_retry(alice, room):
    server = WebServer(f"web-unavailable-api-{RUN}", unreachable("postgres")).start()
    try:
        for path in ("/api/rooms/", f"/api/rooms/{room.slug}/messages/"):
            response = httpx.get(server.url + path, cookies={"sessionid": alice.cookie}, timeout=15)
            assert response.status_code == 503 and response.headers["Retry-After"] == "1", response.text
            assert response.json()["error"]["code"] == "unavailable", response.text
        log = server.log()
        assert "not served: OperationalError" in log and "Traceback" not in log, log[-3000:]
    finally:
        server.stop()


def test_a_change_stored_while_redis_does_not_answer_is_answered_as_done(alice, bob):
    server = WebServer(f"web-unavailable-effect-{RUN}", unreachable("redis")).start()
    try:
        token = secrets.token_hex(16)
        response = httpx.post(server.url + "/api/dms/", json={"username": bob.username}, timeout=15,
                              cookies={"sessionid": alice.cookie, "csrftoken": token},
                              headers={"X-CSRFToken": token, "Referer": server.url})
        # The event that puts it in both sidebars could not be published; the DM is stored all the same.
        assert response.status_code == 201, response.text
        assert Room.objects.filter(slug=response.json()["slug"], private=True).exists()
        log = server.log()
        assert "live effect sidebar_changed not sent" in log and "Traceback" not in log, log[-3000:]
    finally:
        server.stop()
