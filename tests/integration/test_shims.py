"""A web instance whose server shims all find other upstream versions than they were written for
still chats: each shim says so once in the log, and frames go through the server's own path."""

import uuid

import pytest

from tests.conftest import RUN, child_env
from tests.support import PYTHON, WebServer, chat_socket, wait_until

# The server's own command, run after every version lookup of config/shims.py answers "0.0.1".
OTHER_VERSIONS = ("import runpy, sys; import config.shims; config.shims.upstream_version = lambda package: '0.0.1'; "
                  "sys.argv[0] = sys.argv[1]; del sys.argv[1]; runpy.run_module(sys.argv[0], run_name='__main__')")
SHIMS = {
    "daphne": ["config.daphne_close_codes", "config.daphne_backpressure"],
    "uvicorn": ["config.uvicorn_frames"],
}


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request):
    server = WebServer(f"{request.param}-shims-off-{RUN}", child_env(), server=request.param)
    assert server.argv[1:3] == ["-m", request.param]
    server.argv = [PYTHON, "-c", OTHER_VERSIONS, *server.argv[2:]]
    server.start()
    yield server
    server.stop()


async def test_with_every_shim_off_the_server_still_chats_on_its_own_path(server, worker, alice, bob, room):
    async with chat_socket(server, room.slug, alice.cookie) as a, chat_socket(server, room.slug, bob.cookie) as b:
        for n in range(3):
            client_id = uuid.uuid4().hex
            await a.send({"type": "message.send", "body": f"plain path {n}", "client_id": client_id})
            seen = await b.recv_type("message")
            ack = await a.recv_type("ack")
            assert seen["body"] == f"plain path {n}" and ack["client_id"] == client_id and ack["seq"] == seen["seq"]
        await b.send({"type": "ping"})
        await b.recv_type("pong")

    shims = [*SHIMS[server.argv[3]], "chat.consumers._frame_sender"]
    wait_until(lambda: all(f"{shim} is off" in server.log() for shim in shims), 10, message="every shim's warning")
    for shim in shims:
        assert server.log().count(f"{shim} is off") == 1, f"{shim} warned more than once:\n{server.log()[-3000:]}"
