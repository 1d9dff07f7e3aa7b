"""Reconnect storm: many sockets over two web instances, then one instance drains (SIGTERM) while
messages keep flowing, and its sockets reconnect to the other with `?after=` (contract §4, §6).

`--sockets` (10 000) sockets of `--users` (1 000) users over `--rooms` (100) public rooms (each
user's sockets in distinct rooms, half of a user's sockets on each instance), opened from
`--procs` load-generator processes. Once every socket has its `hello`, `--senders` users (one
socket per room, all on the instance that stays) send `--rate` messages/s in all, round-robin over
the rooms, for the whole scenario. After `--before` seconds, the first instance gets SIGTERM (the
load balancer takes it out of rotation at once: it fails /readyz) and closes its sockets with
1012. Each socket then behaves like the web client (chat/static/chat/connection.js): a reconnect
after a random 0-0.5 s once it was connected, full-jitter exponential backoff (0.5 s doubling,
capped at 30 s) for the attempts after, `?after=<the newest seq it has>`, connected once it gets
`resumed`; a 1013 close waits its `retry_after=<s>` hint (from the close reason) plus that jitter.

Reports: the time from SIGTERM until every socket is resumed, per socket the time to resume and
where it went (waiting, TCP connect, upgrade, join up to `hello`, replay up to `resumed`), the
reconnect attempts, close codes (1013s), the messages each resumed client missed (its room's seqs
acked to the senders that it never received, counted from its first `hello`'s `last_seq`: must be
0; a socket still reconnecting when the run ends is counted apart, as unresumed),
duplicates and out-of-order frames (must be 0), and the send->receive latency (p50/p99) of the
sockets that stayed on the surviving instance before, during and after the storm. Writes
results/storm.json and results/storm.png (sockets resumed over time; latency over time).

    .venv/bin/python -m bench.storm                     # 10 000 sockets, daphne
    .venv/bin/python -m bench.storm --quick --server uvicorn
"""

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import os
import random
import resource
import signal
import sys
import threading
import time
from array import array
from collections import Counter
from pathlib import Path

import orjson

from bench.common import (
    PYTHON,
    ROOT,
    RUN,
    Progress,
    StackCpu,
    child_env,
    cpu_speed_ms,
    environment,
    print_table,
    process_cpu,
    setup_django,
    users_with_cookies,
)
from bench.fanout import LeanSender, open_lean, percentile, upgrade_request

TARGET_SECONDS = 10.0
FATAL_CLOSE_CODES = {4401, 4403, 4404}  # connection.js: reconnecting cannot help
RECONNECT_AT_ONCE = {1012, 4408}  # connection.js: after these, a connected socket starts its backoff over
HANDSHAKE_TIMEOUT = 60.0  # seconds from TCP connect to `hello`; a browser would wait as long as TCP lets it
OPEN_TIMEOUT = 1800  # seconds for the initial sockets (joins get slower as rooms fill)
# Kinds of a latency sample, by the receiving socket.
STAYER, MOVER, DRAINING = 0, 1, 2
COLUMNS = ["server", "sockets", "moved", "resumed", "unresumed", "all_resumed_s", "first_1012_s", "resume_p50_s",
           "resume_p99_s", "attempts_max", "closes_1013", "missed", "duplicates", "out_of_order", "acked",
           "lat_before_p50_ms", "lat_before_p99_ms", "lat_storm_p50_ms", "lat_storm_p99_ms", "lat_after_p99_ms",
           "loadavg_1m"]


def backoff(attempt: int) -> float:
    """connection.js's delay before attempt `attempt + 1`: 0-0.5 s at first, then full jitter under
    a ceiling of 0.5 s doubling each attempt, capped at 30 s."""
    ceiling = min(30.0, 0.5 * 2**attempt)
    return random.random() * (0.5 if attempt == 0 else ceiling)


def retry_hint(reason: str) -> float | None:
    """The seconds of a close reason `retry_after=<s>` (the server's join limit), else None."""
    for part in reason.replace(";", " ").replace(",", " ").split():
        if part.startswith("retry_after="):
            try:
                return max(0.0, float(part.split("=", 1)[1]))
            except ValueError:
                return None
    return None


# --- the client: one socket that reconnects like the web client --------------------------------------

class Refused(Exception):
    """The server answered the upgrade with something other than 101."""


class StormSocket(asyncio.Protocol):
    """One connection attempt of a StormClient: the handshake by hand (as bench.fanout's LeanSocket),
    text frames to the client, pings answered, and the close code and reason passed on."""

    def __init__(self, client: "StormClient", request: bytes, upgraded: asyncio.Future) -> None:
        self.client, self.request, self.upgraded = client, request, upgraded
        self.buffer, self.transport, self.open, self.closed = b"", None, False, False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.client.mark("tcp")
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
        if self.open:  # without a close frame: what a browser reports as 1006
            self._closed(1006, "")

    def _closed(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.client.on_close(code, reason)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded.done():
            head, found, buffer = buffer.partition(b"\r\n\r\n")
            if not found:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(Refused(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                self.transport.close()
                return
            self.upgraded.set_result(None)
            self.open = True
            self.client.mark("upgraded")
        at, size = 0, len(buffer)
        while size - at >= 2:
            opcode, length, start = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, at + 2
            if length == 126:
                if size - at < 4:
                    break
                length, start = int.from_bytes(buffer[at + 2:at + 4], "big"), at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length, start = int.from_bytes(buffer[at + 2:at + 10], "big"), at + 10
            if size < start + length:
                break
            payload = buffer[start:start + length]
            if opcode == 0x1:
                self.client.on_text(now, payload)
            elif opcode == 0x9:  # ping: a pong with the same payload, masked with a zero key
                self.transport.write(bytes((0x8A, 0x80 | length)) + b"\0\0\0\0" + payload)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if length >= 2 else 1005
                # Answer the close (masked, zero key) as a browser does, then let the server hang up.
                self.transport.write(bytes((0x88, 0x82)) + b"\0\0\0\0" + code.to_bytes(2, "big"))
                self.transport.close()
                self._closed(code, payload[2:].decode(errors="replace"))
                self.buffer = b""
                return
            at = start + length
        self.buffer = buffer[at:]


class Balancer:
    """The load balancer in front of the instances: a socket's first connection goes where it was
    planned, every reconnect to an instance still in rotation (one that passes /readyz)."""

    def __init__(self, urls: list[str], origin: str) -> None:
        self.urls, self.origin = urls, origin
        self.rotation = list(range(len(urls)))

    def take_out(self, instance: int) -> None:
        self.rotation = [i for i in self.rotation if i != instance]


class Shared:
    """What every client of one load-generator process writes to: live latency samples in flat arrays
    (untracked by the garbage collector) and the drain's start."""

    def __init__(self, drained: int) -> None:
        self.times, self.latencies, self.kinds = array("q"), array("f"), array("b")
        self.presence_times, self.presence_bytes = array("q"), 0  # presence frames: each join and leave
        self.drain_ns: int | None = None  # set when the drain begins
        self.drained = drained  # the instance that will drain


class StormClient:
    """One socket of one user in one room, reconnecting as the web client does."""

    def __init__(self, index: int, cookie: str, room: int, slug: str, instance: int, balancer: Balancer,
                 shared: Shared) -> None:
        self.index, self.cookie, self.room, self.slug = index, cookie, room, slug
        self.instance, self.balancer, self.shared = instance, balancer, shared
        self.seqs = array("q")  # every message seq received, in arrival order
        self.start_seq: int | None = None  # the first hello's last_seq: expected messages are above it
        self.last_seq: int | None = None
        self.connected = self.resuming = self.stopped = False
        self.attempt = 0  # connection.js's backoff counter
        self.greeted: asyncio.Future | None = None
        self.closed: asyncio.Future | None = None
        self.codes: Counter = Counter()  # close codes and failures after the drain began
        self.hints: list[float] = []  # retry_after of each 1013
        self.out_of_order = 0
        self.attempts = 0  # connection attempts after the first close since the drain
        self.initial_failures: Counter = Counter()
        self.down_ns: int | None = None  # the first close since the drain
        self.resumed_ns: int | None = None  # connected again after it
        self.steps: dict[str, int] = {}  # the current attempt's times: start, tcp, upgraded, hello, resumed
        self.last_steps: dict[str, int] = {}  # those of the attempt that resumed
        self.moved = False  # went down since the drain (and so reconnected elsewhere)

    def mark(self, step: str) -> None:
        self.steps[step] = time.time_ns()

    def on_text(self, now: int, payload: bytes) -> None:
        if payload.startswith(b'{"type":"message"'):
            frame = orjson.loads(payload)
            seq = frame["seq"]
            if self.last_seq is not None and seq <= self.last_seq:
                self.out_of_order += 1
            else:
                self.last_seq = seq
            self.seqs.append(seq)
            if self.connected:  # live; frames before `resumed` are the replay (and frames held for it)
                shared = self.shared
                shared.times.append(now)
                shared.latencies.append((now - int(frame["body"].split(":", 1)[0])) / 1e6)
                shared.kinds.append(DRAINING if self.instance == shared.drained
                                    else MOVER if self.moved else STAYER)
        elif payload.startswith(b'{"type":"hello"'):
            self.steps["hello"] = now
            if self.start_seq is None:
                self.start_seq = orjson.loads(payload)["last_seq"]
                self.last_seq = max(self.last_seq or 0, self.start_seq)
            if not self.resuming:
                self._connected(now)
            if not self.greeted.done():
                self.greeted.set_result(None)
        elif payload.startswith(b'{"type":"resumed"'):
            self._connected(now)
        elif payload.startswith(b'{"type":"presence"'):
            self.shared.presence_times.append(now)
            self.shared.presence_bytes += len(payload)

    def _connected(self, now: int) -> None:
        self.attempt = 0
        self.connected = True
        self.steps["resumed"] = now
        if self.down_ns is not None:  # back after a close since the drain
            self.resumed_ns = now
            self.last_steps = dict(self.steps)

    def on_close(self, code: int, reason: str) -> None:
        was_connected, self.connected = self.connected, False
        if self.shared.drain_ns is not None:
            self.codes[code] += 1
            if self.down_ns is None:
                self.down_ns, self.moved = time.time_ns(), True
            self.resumed_ns = None  # down again: resumed only by a later `resumed`
        if self.closed is not None and not self.closed.done():
            self.closed.set_result((code, reason, was_connected))

    def delay(self, code: int, reason: str, was_connected: bool) -> float | None:
        """Seconds before the next attempt (connection.js), None for a close that ends it."""
        if code in FATAL_CLOSE_CODES:
            return None
        if was_connected and code in RECONNECT_AT_ONCE:
            self.attempt = 0
        wait = backoff(self.attempt)
        if code == 1013:
            hint = retry_hint(reason)
            if hint is not None:
                self.hints.append(hint)
                wait += hint
        self.attempt += 1
        return wait

    async def run(self, gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while not self.stopped:
            instance = self.instance if first else random.choice(self.balancer.rotation)
            self.instance = instance
            url = f"{self.balancer.urls[instance]}/ws/chat/{self.slug}/"
            if self.last_seq is not None:
                url += f"?after={self.last_seq}"
            self.resuming = self.last_seq is not None
            host, port, request = upgrade_request(url, self.balancer.origin, self.cookie)
            self.greeted, self.closed = loop.create_future(), loop.create_future()
            self.steps = {}
            self.mark("start")
            if self.down_ns is not None:
                self.attempts += 1
            transport = None
            try:
                async with gate if first else _NO_GATE:
                    upgraded = loop.create_future()
                    transport, _ = await asyncio.wait_for(loop.create_connection(
                        functools.partial(StormSocket, self, request, upgraded), host, port,
                        local_addr=(gate.source, 0)), HANDSHAKE_TIMEOUT)
                    await asyncio.wait_for(upgraded, HANDSHAKE_TIMEOUT)
                    if first:  # opening: the gate holds until the join is done (or the socket closes)
                        await asyncio.wait([self.greeted, self.closed], timeout=HANDSHAKE_TIMEOUT,
                                           return_when=asyncio.FIRST_COMPLETED)
                code, reason, was_connected = await self.closed
            except (OSError, TimeoutError, Refused) as exc:
                if transport is not None:
                    transport.close()
                kind = "timeout" if isinstance(exc, TimeoutError) else (
                    str(exc).split(" ", 2)[1] if isinstance(exc, Refused) and " " in str(exc) else type(exc).__name__)
                if self.shared.drain_ns is not None:
                    self.codes[kind] += 1
                    if self.down_ns is None:
                        self.down_ns, self.moved = time.time_ns(), True
                else:
                    self.initial_failures[kind] += 1
                code, reason, was_connected = 1006, "", False
                self.connected = False
            first = False
            if self.stopped:
                return
            wait = self.delay(code, reason, was_connected)
            if wait is None:
                self.stopped = True
                return
            await asyncio.sleep(wait)

    def report(self) -> dict:
        return {"index": self.index, "room": self.room, "start_seq": self.start_seq, "seqs": self.seqs.tobytes(),
                "out_of_order": self.out_of_order, "moved": self.moved, "connected": self.connected,
                "attempts": self.attempts, "codes": dict(self.codes), "hints": self.hints,
                "initial_failures": dict(self.initial_failures), "down_ns": self.down_ns,
                "resumed_ns": self.resumed_ns, "steps": self.last_steps}


class _NoGate:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc) -> None:
        return None


_NO_GATE = _NoGate()


class Gate(asyncio.Semaphore):
    """Handshakes in flight while the sockets first open (a burst past the listen backlog stalls),
    and the process's own source address (127.0.0.x), so local ports do not run short."""

    def __init__(self, value: int, source: str) -> None:
        super().__init__(value)
        self.source = source


async def _loadgen(index: int, plan: list[tuple], urls: list[str], origin: str, concurrency: int, commands,
                   reports) -> None:
    loop = asyncio.get_running_loop()
    shared = Shared(drained=0)
    balancer = Balancer(urls, origin)
    gate = Gate(concurrency, f"127.0.0.{index + 2}")
    clients = [StormClient(i, cookie, room, slug, instance, balancer, shared)
               for i, cookie, room, slug, instance in plan]
    tasks = [asyncio.ensure_future(client.run(gate)) for client in clients]

    async def opened() -> None:
        done = 0
        while True:
            now = sum(1 for c in clients if c.connected)
            if now > done:
                reports.put(("progress", now - done))
                done = now
            if done == len(clients) or all(c.connected or c.stopped for c in clients):
                break
            await asyncio.sleep(0.25)
        reports.put(("opened", index, done, dict(sum((Counter(c.initial_failures) for c in clients), Counter()))))

    await opened()
    watcher = None
    while True:
        command, arg = await loop.run_in_executor(None, commands.get)
        if command == "drain":  # SIGTERM sent: the balancer takes the instance out at once (/readyz fails)
            shared.drain_ns = arg
            balancer.take_out(shared.drained)
            async def progress(mine: list[StormClient]) -> None:
                while shared.drain_ns is not None:
                    reports.put(("storm", index, sum(1 for c in mine if c.resumed_ns is not None), len(mine),
                                 sum(1 for c in clients if not c.connected and not c.stopped)))
                    await asyncio.sleep(0.2)

            watcher = asyncio.ensure_future(progress([c for c in clients if c.instance == shared.drained]))
        elif command == "stop":
            shared.drain_ns = None
            if watcher is not None:
                watcher.cancel()
            for client in clients:
                client.stopped = True
            for task in tasks:
                task.cancel()
            reports.put(("result", index, {
                "clients": [c.report() for c in clients],
                "times": shared.times.tobytes(), "latencies": shared.latencies.tobytes(),
                "kinds": shared.kinds.tobytes(), "presence_times": shared.presence_times.tobytes(),
                "presence_bytes": shared.presence_bytes}))
            return


def loadgen(*args) -> None:
    _raise_file_limit()
    from bench.fanout import run_lean

    run_lean(_loadgen(*args))


# --- the senders: one socket per room on the surviving instance -------------------------------------

async def _send(url: str, origin: str, slugs: list[str], cookies: list[str], rate: float, commands,
                reports) -> None:
    loop = asyncio.get_running_loop()
    sent_at: dict[str, tuple[int, int]] = {}  # client_id -> (room, sent ns)
    acked: dict[int, list[int]] = {room: [] for room in range(len(slugs))}
    ack_times, ack_ms = array("q"), array("f")
    errors: Counter = Counter()

    def on_reply(now: int, frame: dict) -> None:
        if frame["type"] == "ack":
            room, sent = sent_at.pop(frame["client_id"])
            acked[room].append(frame["seq"])
            ack_times.append(now)
            ack_ms.append((now - sent) / 1e6)
        else:
            errors[frame.get("code", "?")] += 1

    # Room r's socket is sender r % len(cookies)'s: each sender user sends rate / len(cookies) messages/s.
    transports, sockets = [], []
    for room, slug in enumerate(slugs):
        transport, sock = await open_lean(LeanSender, f"{url}/ws/chat/{slug}/", origin, cookies[room % len(cookies)],
                                          on_reply)
        transports.append(transport)
        sockets.append(sock)
    reports.put(("senders", len(sockets)))
    stop = asyncio.Event()

    async def wait_stop() -> None:
        await loop.run_in_executor(None, commands.get)
        stop.set()

    waiter = asyncio.ensure_future(wait_stop())
    began, n = time.perf_counter(), 0
    while not stop.is_set():
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        room = n % len(sockets)
        client_id = f"storm-{n}"
        now = time.time_ns()
        sent_at[client_id] = (room, now)
        sockets[room].send_message(client_id, f"{now}:{RUN}")
        n += 1
    deadline = time.monotonic() + 15  # the last acks
    while sent_at and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await waiter
    closed = sum(t.is_closing() for t in transports)
    for transport in transports:
        transport.close()
    reports.put(("sent", {"sent": n, "acked": acked, "unacked": len(sent_at), "errors": dict(errors),
                          "closed_by_server": closed, "ack_times": ack_times.tobytes(), "ack_ms": ack_ms.tobytes()}))


def sender(*args) -> None:
    from bench.fanout import run_lean

    run_lean(_send(*args))


# --- one run ----------------------------------------------------------------------------------------

def _raise_file_limit() -> tuple[int, int]:
    """Every socket is a file on both sides: the soft limit up to the hard one (the web processes
    started after this inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def plan_sockets(sockets: int, users: int, rooms: int) -> list[tuple[int, int, int]]:
    """(user, room, instance) per socket: a user's sockets in distinct rooms (while there are more
    rooms than sockets per user), spread evenly over the rooms and alternating over the instances."""
    per_user = -(-sockets // users)
    stride = max(1, rooms // per_user)
    out = []
    for i in range(sockets):
        user, j = i % users, i // users
        out.append((user, (user + j * stride) % rooms, (user + j) % 2))
    return out


def run(server: str, args, cookies: list[str], sender_cookies: list[str], owner) -> dict:
    from django.db import connections

    from chat.services.rooms import room_create
    from tests.support import Process, WebServer

    rooms = [room_create(owner=owner, name=f"storm {server} {n} {RUN}", private=False) for n in range(args.rooms)]
    slugs = [room.slug for room in rooms]
    # The benchmark's own limits, high: its users are neither rate limited nor capped in sockets.
    env = child_env(CHAT_RATE_LIMIT="1000000/1s", CHAT_MAX_SOCKETS_PER_USER="1000000",
                    **dict(item.split("=", 1) for item in args.web_env))
    web = [WebServer(f"bench-storm-{server}-{i}-{RUN}", env, server=server).start() for i in range(2)]
    worker = Process(f"bench-storm-worker-{RUN}", [PYTHON, "manage.py", "consume_messages", "--group",
                                                   f"bench-storm-{RUN}"], env).start()
    drained, survivor = web
    connections.close_all()  # the children must not share this process's database connection
    ctx = mp.get_context("fork")
    reports = ctx.Queue()
    commands = [ctx.Queue() for _ in range(args.procs)]
    sender_commands = ctx.Queue()
    children = []
    plan = plan_sockets(args.sockets, len(cookies), args.rooms)
    exited: dict[str, int] = {}
    try:
        urls = [f"ws://127.0.0.1:{srv.port}" for srv in web]
        for k in range(args.procs):
            mine = [(i, cookies[user], room, slugs[room], instance)
                    for i, (user, room, instance) in enumerate(plan) if i % args.procs == k]
            child = ctx.Process(target=loadgen, args=(k, mine, urls, drained.url, args.concurrency, commands[k],
                                                      reports), daemon=True)
            child.start()
            children.append(child)
        began, opened, failures = time.perf_counter(), 0, Counter()
        with Progress(f"storm: {server} opening", total=args.sockets, unit="sockets") as progress:
            done = 0
            while done < args.procs:
                report = reports.get(timeout=OPEN_TIMEOUT)
                if report[0] == "progress":
                    progress.update(report[1])
                elif report[0] == "opened":
                    done += 1
                    opened += report[2]
                    failures.update(report[3])
        open_s = time.perf_counter() - began
        print(f"{server}: {opened} of {args.sockets} sockets open in {open_s:.1f} s "
              f"({opened / open_s:.0f}/s over two instances){f', failures {dict(failures)}' if failures else ''}",
              flush=True)

        send_proc = ctx.Process(target=sender, args=(survivor.url.replace("http", "ws"), survivor.url, slugs,
                                                     sender_cookies, args.rate, sender_commands, reports),
                                daemon=True)
        send_proc.start()
        children.append(send_proc)
        assert reports.get(timeout=120)[0] == "senders"
        stack_cpu = StackCpu({"web_drained": [drained.proc.pid], "web_survivor": [survivor.proc.pid],
                              "worker": [worker.proc.pid], "loadgen": [c.pid for c in children[:-1]],
                              "senders": [send_proc.pid]})
        speed_ms = cpu_speed_ms()
        cpu0, t0 = stack_cpu.sample(), time.perf_counter()
        time.sleep(args.before)
        loadavg_before = os.getloadavg()
        cpu1, t1 = stack_cpu.sample(), time.perf_counter()

        # The drain.
        drain_ns = time.time_ns()
        drained.signal(signal.SIGTERM)
        for queue in commands:
            queue.put(("drain", drain_ns))

        def wait_exit() -> None:
            drained.proc.wait()
            exited["ns"] = time.time_ns()

        threading.Thread(target=wait_exit, daemon=True).start()
        progress_by = {}
        resumed_by = time.monotonic() + args.storm_timeout
        total_moved = None
        with Progress(f"storm: {server} resuming", total=args.sockets // 2, unit="sockets") as progress:
            while time.monotonic() < resumed_by:
                report = reports.get(timeout=args.storm_timeout)
                if report[0] != "storm":
                    continue
                progress_by[report[1]] = report[2:]
                if len(progress_by) == args.procs:
                    resumed = sum(p[0] for p in progress_by.values())
                    total_moved = sum(p[1] for p in progress_by.values())
                    down = sum(p[2] for p in progress_by.values())
                    progress.total = total_moved
                    progress.update_to(resumed)
                    if resumed == total_moved and down == 0:
                        break
        storm_s = time.perf_counter() - t1
        loadavg_storm = os.getloadavg()
        cpu2, t2 = stack_cpu.sample(), time.perf_counter()
        time.sleep(args.after)
        cpu3, t3 = stack_cpu.sample(), time.perf_counter()
        sender_commands.put("stop")
        while (report := reports.get(timeout=60))[0] != "sent":
            pass
        sent = report[1]
        time.sleep(2.0)  # the last deliveries
        for queue in commands:
            queue.put(("stop", None))
        results = {}
        while len(results) < args.procs:
            report = reports.get(timeout=300)
            if report[0] == "result":
                results[report[1]] = report[2]
        cores = {"before": StackCpu.cores(cpu0, cpu1, t1 - t0), "storm": StackCpu.cores(cpu1, cpu2, t2 - t1),
                 "after": StackCpu.cores(cpu2, cpu3, t3 - t2)}
        survivor_cpu_s = round(process_cpu(survivor.proc.pid), 1)
    finally:  # whatever was started, also when a step failed or the run was interrupted
        for child in children:
            child.join(5)  # done by now, unless the run failed
            if child.is_alive():
                child.kill()
        for srv in [*web, worker]:
            srv.stop()
    return analyse(server, args, results, sent, drain_ns, t1, storm_s, exited.get("ns"), open_s, opened,
                   dict(failures), cores, speed_ms, loadavg_before, loadavg_storm, survivor_cpu_s,
                   [str(srv.log_path) for srv in web])


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


def analyse(server, args, results, sent, drain_ns, t_drain, storm_s, exit_ns, open_s, opened, failures, cores,
            speed_ms, loadavg_before, loadavg_storm, survivor_cpu_s, logs) -> dict:
    acked = {room: set(seqs) for room, seqs in sent["acked"].items()}
    clients = [c for part in results.values() for c in part["clients"]]
    missed = duplicates = out_of_order = 0
    missed_clients = missed_unresumed = 0
    for client in clients:
        seqs = array("q")
        seqs.frombytes(client["seqs"])
        received = set(seqs)
        duplicates += len(seqs) - len(received)
        out_of_order += client["out_of_order"]
        start = client["start_seq"] if client["start_seq"] is not None else 0
        gone = sum(1 for seq in acked.get(client["room"], ()) if seq > start and seq not in received)
        if client["connected"]:  # the no-gap guarantee: a connected (resumed) socket has every acked message
            missed += gone
            missed_clients += gone > 0
        else:  # still reconnecting when the run ended: its gap is the storm's length, not a loss
            missed_unresumed += gone
    moved = [c for c in clients if c["moved"]]
    resumed = [c for c in moved if c["resumed_ns"] is not None]
    resume_s = sorted((c["resumed_ns"] - drain_ns) / 1e9 for c in resumed)
    first_1012 = min((c["down_ns"] for c in moved), default=None)
    attempts = Counter(c["attempts"] for c in moved)
    codes = sum((Counter(c["codes"]) for c in moved), Counter())
    hints = [h for c in moved for h in c["hints"]]

    # Where a resumed socket's time went, from its close to `resumed` on the attempt that made it.
    def spans(a: str, b: str) -> list[float]:
        return [(c["steps"][b] - c["steps"][a]) / 1e6 for c in resumed if a in c["steps"] and b in c["steps"]]

    waited = [(c["steps"]["start"] - c["down_ns"]) / 1e6 for c in resumed if "start" in c["steps"]]
    parts = (("waiting (backoff, retries)", waited), ("tcp connect", spans("start", "tcp")),
             ("upgrade (101)", spans("tcp", "upgraded")), ("join (to hello)", spans("upgraded", "hello")),
             ("replay (to resumed)", spans("hello", "resumed")))
    where = {name: {"p50_ms": _ms(values, 50), "p99_ms": _ms(values, 99), "max_ms": _ms(values, 100)}
             for name, values in parts}

    # Live latency by phase and over time.
    times, lats, kinds = array("q"), array("f"), array("b")
    for part in results.values():
        times.frombytes(part["times"])
        lats.frombytes(part["latencies"])
        kinds.frombytes(part["kinds"])
    all_resumed_ns = max((c["resumed_ns"] for c in resumed), default=None)
    storm_end = all_resumed_ns if all_resumed_ns is not None and len(resumed) == len(moved) else \
        drain_ns + int(storm_s * 1e9)
    before_from = drain_ns - int(args.before * 1e9) + int(1e9)  # the first second warms up
    phases = {"before": (before_from, drain_ns), "storm": (drain_ns, storm_end), "after": (storm_end, 2**62)}
    by_phase: dict[str, list[float]] = {}
    buckets: dict[int, list[float]] = {}
    names = {STAYER: "stayers", MOVER: "movers", DRAINING: "draining"}
    for t, lat, k in zip(times, lats, kinds, strict=True):
        phase = "before" if t < drain_ns else "storm" if t < storm_end else "after"
        if phase != "before" or t >= before_from:
            by_phase.setdefault(f"{phase}_{names[k]}", []).append(lat)
        if k != DRAINING:  # the surviving instance's sockets
            buckets.setdefault((t - drain_ns) // 500_000_000, []).append(lat)
    latency = {key: {"frames": len(values), "p50_ms": _ms(values, 50), "p99_ms": _ms(values, 99),
                     "max_ms": _ms(values, 100)} for key, values in sorted(by_phase.items())}
    for phase in ("before", "storm", "after"):
        latency.setdefault(f"{phase}_stayers", {"frames": 0, "p50_ms": None, "p99_ms": None, "max_ms": None})
    over_time = [{"t_s": b / 2, "frames": len(v), "p50_ms": _ms(v, 50), "p99_ms": _ms(v, 99)}
                 for b, v in sorted(buckets.items())]
    presence = array("q")
    for part in results.values():
        presence.frombytes(part["presence_times"])
    presence_frames = Counter("before" if t < drain_ns else "storm" if t < storm_end else "after" for t in presence)
    ack_times, ack_ms = array("q"), array("f")
    ack_times.frombytes(sent["ack_times"])
    ack_ms.frombytes(sent["ack_ms"])
    ack = {phase: _ms([a for t, a in zip(ack_times, ack_ms, strict=True) if lo <= t < hi], 99)
           for phase, (lo, hi) in phases.items()}
    all_resumed_s = round((all_resumed_ns - drain_ns) / 1e9, 2) if storm_end == all_resumed_ns else None
    row = {
        "server": server, "sockets": len(clients), "opened": opened, "moved": len(moved), "resumed": len(resumed),
        "all_resumed_s": all_resumed_s,
        "first_1012_s": round((first_1012 - drain_ns) / 1e9, 2) if first_1012 else None,
        "drained_exit_s": round((exit_ns - drain_ns) / 1e9, 2) if exit_ns else None,
        "resume_p50_s": round(percentile(resume_s, 50), 2) if resume_s else None,
        "resume_p99_s": round(percentile(resume_s, 99), 2) if resume_s else None,
        "attempts_max": max(attempts, default=0), "closes_1013": codes.get(1013, 0),
        "sockets_with_1013": sum(1 for c in moved if c["codes"].get(1013)),
        "missed": missed, "clients_missing": missed_clients, "missed_by_unresumed": missed_unresumed,
        "unresumed": sum(1 for c in clients if not c["connected"]),
        "duplicates": duplicates, "out_of_order": out_of_order,
        "acked": sum(len(s) for s in acked.values()), "unacked": sent["unacked"], "send_errors": sent["errors"],
        "senders_closed": sent["closed_by_server"],
        **{f"lat_{phase}_{q}_ms": latency[f"{phase}_stayers"][f"{q}_ms"]
           for phase in ("before", "storm", "after") for q in ("p50", "p99")},
        "ack_p99_ms": ack, "loadavg_1m": round(loadavg_storm[0], 2),
    }
    return {"row": row, "open_s": round(open_s, 1), "initial_failures": failures,
            "attempts": {str(k): v for k, v in sorted(attempts.items())},
            "close_codes": {str(k): v for k, v in codes.most_common()},
            "retry_hints": {"count": len(hints), "p50_s": round(percentile(hints, 50), 2) if hints else None,
                            "max_s": max(hints, default=None)},
            "where_the_time_goes": where, "latency": latency, "over_time": over_time,
            "resumed_over_time": [round(s, 3) for s in resume_s],
            "first_1012_s": row["first_1012_s"], "drained_exit_s": row["drained_exit_s"],
            "cores": cores, "speed_ms": speed_ms,
            # Every join and leave changes a room's online list: a frame to each socket in the room.
            "presence_frames": dict(presence_frames),
            "presence_mb": round(sum(part["presence_bytes"] for part in results.values()) / 2**20, 1),
            "loadavg": {"before": [round(x, 2) for x in loadavg_before], "storm": [round(x, 2) for x in loadavg_storm]},
            "survivor_cpu_s_total": survivor_cpu_s, "sent": sent["sent"], "logs": logs}


# --- report ---------------------------------------------------------------------------------------

def print_report(result: dict) -> None:
    runs = result["runs"]
    print_table([r["row"] for r in runs.values()], COLUMNS)
    for server, data in runs.items():
        row = data["row"]
        print(f"\n{server}: reconnect attempts per moved socket {data['attempts']}; close codes {data['close_codes']}; "
              f"presence frames received {data.get('presence_frames')} ({data.get('presence_mb')} MB); "
              f"sockets opened in {data['open_s']} s; ack p99 ms {row['ack_p99_ms']}; speed_ms {data['speed_ms']}; "
              f"load average before {data['loadavg']['before']}, after the storm {data['loadavg']['storm']}")
        print_table([{"part": k, **v} for k, v in data["where_the_time_goes"].items()], ["part", "p50_ms", "p99_ms",
                                                                                         "max_ms"])
        busy = {phase: {part: v for part, v in c.items() if v >= 0.05} for phase, c in data["cores"].items()}
        print(f"cores (of {os.cpu_count()}) by phase: {busy}")
        ok = (row["all_resumed_s"] is not None and row["all_resumed_s"] <= TARGET_SECONDS and row["missed"] == 0
              and row["duplicates"] == 0)
        print(f"target: every socket resumed within {TARGET_SECONDS:.0f} s of SIGTERM, nothing missed -> "
              f"{'met' if ok else 'missed'} (all resumed in {row['all_resumed_s']} s, {row['missed']} missed, "
              f"{row['duplicates']} duplicates)")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (resumed_ax, latency_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for server, data in result["runs"].items():
        times = data["resumed_over_time"]
        line = resumed_ax.step([0, *times], range(len(times) + 1), where="post", label=f"{server}")[0]
        if data["first_1012_s"] is not None:
            resumed_ax.axvline(data["first_1012_s"], color=line.get_color(), linestyle=":", alpha=0.7,
                               label=f"{server}: first 1012")
        if data["row"]["all_resumed_s"] is not None:
            latency_ax.axvline(data["row"]["all_resumed_s"], color=line.get_color(), linestyle=":", alpha=0.7,
                               label=f"{server}: all resumed")
        points = [p for p in data["over_time"] if p["p99_ms"] is not None]
        latency_ax.plot([p["t_s"] for p in points], [p["p99_ms"] for p in points], color=line.get_color(),
                        label=f"{server} p99")
        latency_ax.plot([p["t_s"] for p in points], [p["p50_ms"] for p in points], color=line.get_color(),
                        alpha=0.5, linestyle="--", label=f"{server} p50")
    resumed_ax.axvline(TARGET_SECONDS, color="grey", linestyle="--", label=f"target {TARGET_SECONDS:.0f} s")
    resumed_ax.set_xlabel("seconds since SIGTERM")
    resumed_ax.set_ylabel("sockets resumed on the surviving instance")
    resumed_ax.set_title("Drained instance's sockets resumed")
    latency_ax.axvline(0, color="grey", linestyle=":", label="SIGTERM")
    latency_ax.set_yscale("log")
    latency_ax.set_xlabel("seconds since SIGTERM (0.5 s buckets)")
    latency_ax.set_ylabel("send→receive latency (ms), surviving instance")
    latency_ax.set_title("Live delivery latency")
    for ax in (resumed_ax, latency_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="daphne", help="daphne or uvicorn (or both: daphne,uvicorn)")
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=8, help="handshakes in flight per process while opening")
    parser.add_argument("--senders", type=int, default=4, help="sending users (one socket per room each share)")
    parser.add_argument("--rate", type=float, default=40.0, help="messages/s over all rooms, the whole scenario")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of messages before SIGTERM")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of messages after the storm")
    parser.add_argument("--storm-timeout", type=float, default=180.0, help="seconds to wait for every socket")
    parser.add_argument("--web-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for both web instances (repeatable), e.g. the join limit")
    parser.add_argument("--quick", action="store_true", help="1 000 sockets, 100 users, 20 rooms, 2 processes")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    # SIGTERM (a timeout, a CI job cancelled) ends the run through its cleanup: the instances and the
    # worker it started are processes of their own session and would outlive it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"bench.storm: signal {signum}"))
    if args.quick:
        args.sockets, args.users, args.rooms, args.procs, args.before = 1_000, 100, 20, 2, 5.0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nofile = _raise_file_limit()
    if nofile[1] < args.sockets + 2000:
        print(f"warning: the hard file limit ({nofile[1]}) is close to {args.sockets} sockets", flush=True)

    env = environment()
    setup_django("chat_bench_storm")
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user(username=f"storm-{RUN}")
    cookies = [c for _, c in users_with_cookies(args.users, "storm")]
    sender_cookies = [c for _, c in users_with_cookies(args.senders, "storm-sender")]
    result = {**env, "settings": {**vars(args), "nofile": list(nofile)}, "runs": {}}
    for server in args.server.split(","):
        print(f"== {server}: {args.sockets} sockets of {args.users} users in {args.rooms} rooms over two instances, "
              f"{args.procs} load-generator processes, {args.rate:g} messages/s from {args.senders} senders; "
              f"SIGTERM to one instance after {args.before:g} s", flush=True)
        result["runs"][server] = run(server, args, cookies, sender_cookies, owner)
    print()
    print_report(result)
    (out / "storm.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "storm.png")
    print(f"\njson: {out / 'storm.json'}\nplot: {out / 'storm.png'}")


if __name__ == "__main__":
    main()
