"""A frame a store fails (here Postgres, out of reach behind a cut connection) is answered with
`error unavailable` and a retry hint; the socket stays open and works again once the store is back."""

import os
from urllib.parse import urlsplit, urlunsplit

from chat.models import Message
from tests.conftest import RUN, child_env
from tests.integration.test_rich_messages import say
from tests.support import FailoverProxy, WebServer, chat_socket, wait_until


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
