"""The seed stack (the original Node.js design's fan-out path, ../shared/peers/seed-stack/) beside the
chat in a fan-out run: its packages installed once into .cache/seed-stack (git-ignored), two of its
servers started on the run's Redis, and the load generator's adapter for its protocol (Socket.IO v4
over the websocket transport, written out at the top of its server.js).

Its servers publish every message to one Redis channel (MESSAGES, whatever the database) and emit
it to every client of every server, so a message's body carries the run's id and the receivers
count only their own run's messages."""

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path

import orjson

from bench.common import ROOT, RUN
from bench.fanout import Arrivals, LeanSocket, open_lean

SEED_DIR = Path(os.environ.get("SEED_STACK_DIR", ROOT.parent / "shared" / "peers" / "seed-stack"))
CACHE = ROOT / ".cache" / "seed-stack"
ORIGIN = "http://127.0.0.1"
TAG = RUN.encode()  # in every body of this run


def available() -> bool:
    return (SEED_DIR / "server.js").exists()


def install() -> None:
    """npm install of the seed stack's packages (the versions of its package.json) into .cache/."""
    wanted = json.loads((SEED_DIR / "package.json").read_text())["dependencies"]
    installed = all((CACHE / "node_modules" / name / "package.json").exists()
                    and json.loads((CACHE / "node_modules" / name / "package.json").read_text())["version"] == v
                    for name, v in wanted.items())
    if not installed:
        subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(CACHE),
                        *(f"{name}@{v}" for name, v in wanted.items())], check=True, stdout=subprocess.DEVNULL)


def start(name: str, redis_url: str):
    """One seed server on a free port (tests.support.Process: its log in test-artifacts/)."""
    from tests.support import Process, free_port, wait_until

    port = free_port()
    env = {**os.environ, "NODE_PATH": str(CACHE / "node_modules"), "PORT": str(port), "REDIS_URL": redis_url}
    server = Process(name, ["node", str(SEED_DIR / "server.js")], env).start()
    server.port = port

    def up() -> bool:
        if not server.alive():
            raise AssertionError(f"{name} exited:\n{server.log()[-3000:]}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_until(up, 30, 0.1, f"{name} to listen")
    return server


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"


def message_frame(body: str) -> str:
    return "42" + orjson.dumps(["event:message", {"message": body}]).decode()


def message_body(payload: bytes) -> str:
    """The body of a '42["message","{\\"message\\":...}"]' frame."""
    return orjson.loads(orjson.loads(payload[2:])[1])["message"]


class SeedSocket(LeanSocket):
    """Engine.IO / Socket.IO on a LeanSocket: joins the namespace "/" once open, answers pings and
    hands each event frame ("42...") to `on_event`."""

    def __init__(self, request: bytes, opened: asyncio.Future, joined: asyncio.Future) -> None:
        super().__init__(request, opened)
        self.joined = joined

    def on_text(self, now: int, payload: bytes) -> None:
        if payload[:2] == b"42":
            self.on_event(now, payload)
        elif payload == b"2":  # Engine.IO ping
            self.send_text("3")
        elif payload[:2] == b"40":
            if not self.joined.done():
                self.joined.set_result(None)
        elif payload[:1] == b"0":  # Engine.IO open: join the default namespace
            self.send_text("40")

    def on_event(self, now: int, payload: bytes) -> None:
        pass


class SeedReceiver(SeedSocket):
    def __init__(self, request: bytes, opened: asyncio.Future, joined: asyncio.Future, arrivals: Arrivals) -> None:
        super().__init__(request, opened, joined)
        self.times, self.payloads = arrivals.times, arrivals.payloads

    def on_event(self, now: int, payload: bytes) -> None:
        if TAG in payload:
            self.times.append(now)
            self.payloads.append(payload)


class SeedSender(SeedSocket):
    """Sends; every message comes back to it too (the seed emits to every client), unparsed."""

    def send_message(self, client_id: str, body: str) -> None:
        # An overloaded seed server closes sockets whose pong is stuck behind their backlog: what
        # they were to send counts as offered and lost.
        if not self.transport.is_closing():
            self.send_text(message_frame(body))


async def open_socket(protocol, port: int, *args):
    """A joined Socket.IO socket: (transport, protocol)."""
    joined = asyncio.get_running_loop().create_future()
    transport, sock = await open_lean(protocol, url(port), ORIGIN, "", joined, *args)
    await asyncio.wait_for(joined, 10)
    return transport, sock
