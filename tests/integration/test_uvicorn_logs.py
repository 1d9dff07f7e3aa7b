"""uvicorn's `--no-access-log` also keeps its WebSocket access lines out of the log (two a socket,
config/uvicorn_logs.py); with the access log on they are written as uvicorn writes them."""

import pytest

from tests.conftest import RUN, child_env
from tests.support import WebServer, chat_socket


@pytest.fixture(params=[False, True], ids=["no-access-log", "access-log"])
def uvicorn_server(request):
    server = WebServer(f"uvicorn-logs-{request.node.callspec.id}-{RUN}", child_env(), server="uvicorn")
    if request.param:
        server.argv.remove("--no-access-log")
    server.start()
    yield server, request.param
    server.stop()


async def test_a_sockets_access_lines_follow_the_access_log_setting(uvicorn_server, alice, room):
    server, access_log = uvicorn_server
    async with chat_socket(server, room.slug, alice.cookie) as ws:  # uvicorn logs both before the 101
        await ws.send({"type": "ping"})
        await ws.recv_type("pong")
    log = server.log()
    lines = [f'"WebSocket /ws/chat/{room.slug}/" [accepted]', "connection open"]
    assert all((line in log) == access_log for line in lines), log[-3000:]
    assert "Application startup complete" in log or "Uvicorn running on" in log  # its other lines stay
