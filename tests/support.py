"""Test helpers: real processes (daphne, uvicorn, the worker), users with sessions, socket clients."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ
import httpx
import psycopg2
import websockets

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PYTHON = sys.executable


def state_message(room_id: int, author_id: int, body: str) -> dict:
    """A message frame for a send straight into the room state (RoomState.send), which sets its seq."""
    from django.utils import timezone

    from chat import protocol

    return protocol.message_object(id=str(uuid.uuid4()), room=f"room-{room_id}", seq=0, author_id=author_id,
                                   author_username="state", body=body, created_at=timezone.now(), edited_at=None,
                                   client_id=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def unique_topic(name: str) -> str:
    """A topic of this test run's own: under the run's topic, so the run deletes it at the end."""
    return unique(f"{os.environ['KAFKA_TOPIC']}.{name}")


# The deployment's database roles (scripts/services.sh; docs/deployment.md, "Database roles"): web
# instances log in as chat_web, workers as chat_worker; their local passwords are their names.
DATABASE_ROLES = {"web": "chat_web", "worker": "chat_worker"}


def database_role_url(url: str, role: str) -> str:
    """A Postgres DATABASE_URL with the credentials of the deployment's `role` ("web" or "worker")
    in place of its own; any other URL as it is."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        return url
    name = DATABASE_ROLES[role]
    return urlunsplit(parts._replace(netloc=f"{name}:{name}@{parts.netloc.rpartition('@')[2]}"))


def with_database_role(env: dict[str, str], role: str) -> dict[str, str]:
    if "DATABASE_URL" not in env:
        return env
    return {**env, "DATABASE_URL": database_role_url(env["DATABASE_URL"], role)}


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


class Process:
    """A child process of the project with its log in test-artifacts/. A worker (consume_messages)
    logs in to Postgres as the worker's role, a WebServer as the web role (DATABASE_ROLES)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        if "consume_messages" in argv:
            env = with_database_role(env, "worker")
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen | None = None
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}.log"

    def start(self) -> "Process":
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process writes to it until it exits
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def daphne_command(port: int, *options: str, app: str = "config.asgi:application") -> list[str]:
    """The contract's command for daphne on 127.0.0.1:`port` (its listen backlog: config/daphne_listen.py)."""
    return [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *options, app]


class WebServer(Process):
    def __init__(self, name: str, env: dict[str, str], server: str = "daphne", port: int | None = None) -> None:
        self.port = port or free_port()
        if server == "daphne":
            argv = daphne_command(self.port)
        else:
            argv = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port), "--backlog", "4096",
                    "--no-access-log", "config.asgi:application"]
        super().__init__(name, argv, with_database_role(env, "web"))
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "WebServer":
        super().start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        def up():
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout, 0.1, f"{self.name} to answer /healthz")


class ChatSocket:
    """A real WebSocket client speaking the contract, with helpers that wait on frames."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames: list[dict] = []  # everything received, in order

    async def send(self, frame: dict | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10) -> dict:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def recv_type(self, *types: str, timeout: float = 10) -> dict:
        """The next frame of one of `types`, skipping others (they stay in self.frames)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {types} frame within {timeout} s; got {self.frames[-5:]}")
            try:
                frame = await self.recv(remaining)
            except TimeoutError:
                raise AssertionError(f"no {types} frame within {timeout} s; last frames: {self.frames[-5:]}") from None
            if frame["type"] in types:
                return frame

    async def seen_or_next(self, frame_type: str, timeout: float = 10) -> dict:
        """The first `frame_type` frame received so far, or the next one to arrive."""
        for frame in self.frames:
            if frame["type"] == frame_type:
                return frame
        return await self.recv_type(frame_type, timeout=timeout)

    async def messages(self, count: int, timeout: float = 20) -> list[dict]:
        return [await self.recv_type("message", timeout=timeout) for _ in range(count)]

    async def close_code(self, timeout: float = 10) -> int:
        """Wait until the server closes the socket; returns the close code."""
        try:
            while True:
                await self.recv(timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else exc.code
        except TimeoutError:
            raise AssertionError(f"socket still open after {timeout} s") from None

    async def close(self) -> None:
        await self.ws.close()


@asynccontextmanager
async def chat_socket(server: WebServer, slug: str, cookie: str | None, *, after: int | None = None,
                      origin: str | None = None, hello: bool = True, compression: str | None = "deflate"):
    url = f"ws://127.0.0.1:{server.port}/ws/chat/{slug}/" + (f"?after={after}" if after is not None else "")
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    # max_queue=None: a test's socket that reads none of its room's frames would otherwise stop
    # reading at 16 and not see the server's close frame, and each close wait out its timeout.
    async with websockets.connect(url, origin=origin or server.url, additional_headers=headers,
                                  max_size=None, max_queue=None, open_timeout=10, compression=compression) as ws:
        client = ChatSocket(ws)
        if hello:
            first = await client.recv()
            assert first["type"] == "hello", first
            client.hello = first
        yield client


class FailoverProxy:
    """A minimal TCP load balancer on 127.0.0.1 for tests: each new connection goes to the first
    backend that accepts it, so killing that instance sends reconnects to the next one. With
    `rotate`, connections start at the next backend each time (round robin over those alive).
    `cut()` and `restore()` play the network going and coming back."""

    def __init__(self, backends: list[int], *, rotate: bool = False) -> None:
        self.backends = backends
        self.rotate = rotate
        self._turn = 0
        self.up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failover-proxy", daemon=True)

    def start(self) -> "FailoverProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the test proxy did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> None:
        """As when the network goes: every open connection reset, new ones refused until restore()."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def restore(self) -> None:
        self.up = True

    async def _cut(self) -> None:
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a goodbye: nothing more gets through

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _open_backend(self):
        start = self._turn % len(self.backends) if self.rotate else 0
        self._turn += 1
        for port in self.backends[start:] + self.backends[:start]:
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
        raise OSError("no backend accepts connections")

    async def _handle(self, client_reader, client_writer) -> None:
        if not self.up:
            client_writer.transport.abort()
            return
        try:
            backend_reader, backend_writer = await self._open_backend()
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, backend_writer))

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                self._writers.discard(writer)

        await asyncio.gather(pipe(client_reader, backend_writer), pipe(backend_reader, client_writer))


class StayingReader:
    """A client that stays in a room through restarts, as the web client does: on any close it
    reconnects (through `endpoint`, e.g. a balancer) with ?after=<last seq seen> and keeps every
    message's seq, in arrival order, so a test can check nothing was missed or doubled."""

    def __init__(self, endpoint, slug: str, cookie: str) -> None:
        self.endpoint, self.slug, self.cookie = endpoint, slug, cookie
        self.seqs: list[int] = []
        self.trace: list[tuple[int, int, int]] = []  # (connection number, its ?after, seq) for failure reports
        self.reconnects = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                after = self.seqs[-1] if self.seqs else 0
                async with chat_socket(self.endpoint, self.slug, self.cookie, after=after) as sock:
                    while not stop.is_set():
                        # No timeout: a recv cancelled just as a frame lands must not count it twice
                        # (the test cancels the reader when done).
                        frame = json.loads(await sock.ws.recv())
                        if frame["type"] == "message":
                            self.seqs.append(frame["seq"])
                            self.trace.append((self.reconnects, after, frame["seq"], frame["id"][:8],
                                               round(time.monotonic(), 3)))
            except (websockets.ConnectionClosed, OSError, AssertionError, TimeoutError):
                pass
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(0.1)


class StayingSender:
    """Sends `count` messages at `interval`, reconnecting like the web client and re-sending every
    unacked message with its client_id; `acked` maps client_id -> (id, seq)."""

    def __init__(self, endpoint, slug: str, cookie: str, count: int, interval: float = 0.03) -> None:
        self.endpoint, self.slug, self.cookie = endpoint, slug, cookie
        self.count, self.interval = count, interval
        self.pending: dict[str, str] = {}
        self.acked: dict[str, tuple[str, int]] = {}
        self.created = 0

    async def run(self, deadline: float) -> None:
        while len(self.acked) < self.count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.acked)} of {self.count} acked in time")
            try:
                async with chat_socket(self.endpoint, self.slug, self.cookie) as sock:
                    for client_id, body in list(self.pending.items()):
                        await sock.send({"type": "message.send", "body": body, "client_id": client_id})
                    while len(self.acked) < self.count:
                        if self.created < self.count:
                            client_id = uuid.uuid4().hex
                            self.pending[client_id] = f"load {self.created}"
                            self.created += 1
                            await sock.send({"type": "message.send", "body": self.pending[client_id],
                                             "client_id": client_id})
                        await self._collect(sock, self.interval if self.created < self.count else 1.0)
            except (websockets.ConnectionClosed, OSError, AssertionError):
                await asyncio.sleep(0.1)

    async def _collect(self, sock: "ChatSocket", wait: float) -> None:
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            try:
                frame = await sock.recv(timeout=left)
            except TimeoutError:
                return
            if frame["type"] == "ack":
                self.pending.pop(frame["client_id"], None)
                self.acked[frame["client_id"]] = (frame["id"], frame["seq"])
            elif frame["type"] == "error" and frame.get("client_id"):
                # not_persisted or rate_limited: it stays pending and goes again on the next connection
                raise AssertionError(f"send refused: {frame}")


def pg_query(database_url: str, statement: str, params: list | None = None) -> list[tuple]:
    """The rows of one statement, on a connection of its own to that database (autocommit)."""
    db = environ.Env.db_url_config(database_url)
    conn = psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                            port=db["PORT"])
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()
    finally:
        conn.close()
