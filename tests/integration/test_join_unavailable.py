"""A join while a service it needs does not answer (Postgres for the session, a Redis shard for the
room) is told to try again later: 1013 with a `retry_after` hint, as a shed join is
(docs/protocol.md), and one warning line in the instance's log instead of a traceback and 1011."""

import re

import pytest
import websockets

from tests.conftest import OWNER_DATABASE_URL, RUN, child_env
from tests.support import WebServer, free_port


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
