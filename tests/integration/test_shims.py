"""A web instance whose server shims all find other upstream versions than they were written for
still chats: each shim says so once in the log, and frames go through the server's own path. With
the shims on, daphne closes sockets with the app's close code and reason."""

import asyncio
import subprocess
import uuid
from urllib.parse import quote

import pytest
import websockets
from websockets.frames import Close

from tests.conftest import RUN, child_env
from tests.support import PYTHON, Process, WebServer, chat_socket, daphne_command, free_port, unique, wait_until

# The server's own command, run after every version lookup of config/shims.py answers "0.0.1".
OTHER_VERSIONS = ("import runpy, sys; import config.shims; config.shims.upstream_version = lambda package: '0.0.1'; "
                  "sys.argv[0] = sys.argv[1]; del sys.argv[1]; runpy.run_module(sys.argv[0], run_name='__main__')")
SHIMS = {
    "daphne": ["config.daphne_close_codes", "config.daphne_backpressure", "config.daphne_handshake",
               "config.daphne_listen"],
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

    shims = SHIMS[server.argv[3]]
    wait_until(lambda: all(f"{shim} is off" in server.log() for shim in shims), 10, message="every shim's warning")
    for shim in shims:
        assert server.log().count(f"{shim} is off") == 1, f"{shim} warned more than once:\n{server.log()[-3000:]}"


# daphne with the shims config/asgi.py installs, serving an app that accepts each socket and closes
# it with the code and reason its path names: /<code>/<reason>, /<code>/ without a reason.
CLOSING_APP = """
import sys

from config import daphne_backpressure, daphne_close_codes

assert daphne_close_codes.install() and daphne_backpressure.install()

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        return await send({"type": "http.response.body", "body": b"ok"})
    await receive()
    await send({"type": "websocket.accept"})
    _, code, reason = scope["path"].split("/", 2)  # daphne unquotes the path
    await send({"type": "websocket.close", "code": int(code), **({"reason": reason} if reason else {})})

from daphne.cli import CommandLineInterface
CommandLineInterface().run(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def closing_daphne():
    port = free_port()
    daphne_options = daphne_command(port, app="__main__:app")[3:]  # after `python -m daphne`
    server = Process(unique("daphne-closing"), [PYTHON, "-c", CLOSING_APP, *daphne_options], child_env()).start()
    server.url = f"ws://127.0.0.1:{port}"
    wait_until(lambda: "Listening on TCP address" in server.log() or not server.alive(), 30, 0.1, "daphne to listen")
    assert server.alive(), server.log()[-3000:]
    yield server
    server.stop()


async def closed_with(url: str, **connect) -> Close:
    async with websockets.connect(url, open_timeout=10, **connect) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    return closed.value.rcvd


@pytest.mark.parametrize(("code", "reason"), [
    (1000, "done"), (4401, ""), (4000, "ünïcode ✓"), (3000, "x" * 200),  # codes autobahn's sendClose takes
    (1013, "retry_after=2.5"), (1012, "restart"), (1008, ""), (1011, "y" * 200),  # server-only codes
])
async def test_under_daphne_a_socket_gets_the_close_code_and_reason_the_app_sent(closing_daphne, code, reason):
    rcvd = await closed_with(f"{closing_daphne.url}/{code}/{quote(reason)}")
    assert rcvd.code == code
    # RFC 6455 5.5: a close frame's reason is at most 123 bytes, cut on a character boundary.
    assert rcvd.reason == reason.encode()[:123].decode(errors="ignore")


async def test_under_daphne_a_socket_shed_past_the_pending_joins_limit_gets_retry_after():
    server = WebServer(unique("daphne-shedding"), child_env(CHAT_MAX_PENDING_JOINS="0")).start()
    try:
        rcvd = await closed_with(f"ws://127.0.0.1:{server.port}/ws/chat/{unique('room')}/", origin=server.url)
    finally:
        server.stop()
    assert rcvd.code == 1013
    assert rcvd.reason.startswith("retry_after=") and float(rcvd.reason.partition("=")[2]) > 0, rcvd.reason


def test_daphne_started_with_the_contracts_command_listens_with_a_backlog_of_4096(web_a):
    """`daphne -b HOST -p PORT` (contract §1): Twisted's backlog of 50 would drop a storm's SYNs."""
    assert web_a.argv[web_a.argv.index("-b"):][:4] == ["-b", "127.0.0.1", "-p", str(web_a.port)]
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{web_a.port}"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert listening[0] == "LISTEN" and listening[2] == "4096", listening
