"""Cross-instance fan-out benchmark: one room, receivers split over two web instances, a sender at
stepped rates. Prints per step: offered and delivered deliveries/s, lost, send->receive latency
percentiles, send->ack latency, and the load generator's own CPU; writes JSON (and a PNG plot when
matplotlib is installed) to results/.

    .venv/bin/python -m bench.fanout --servers daphne --receivers 200,500 --offered 10000,40000
"""

import argparse
import asyncio
import base64
import functools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson

from bench.common import (
    PYTHON,
    ROOT,
    RUN,
    StackCpu,
    child_env,
    cpu_speed_ms,
    environment,
    own_cpu,
    print_table,
    setup_django,
    users_with_cookies,
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


class LeanSocket(asyncio.Protocol):
    """A WebSocket client at a few microseconds a frame, so the load generator leaves the cores to
    the servers (the `websockets` client took ~40 us a frame, over half a core at 16k deliveries/s).
    It does the handshake by hand, answers pings, sends unfragmented text frames (masked with a zero
    key, which leaves the payload as it is), and hands each text frame it gets to `on_text`."""

    def __init__(self, request: bytes, opened: asyncio.Future) -> None:
        self.request, self.opened = request, opened
        self.buffer, self.transport, self.upgraded = b"", None, False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        size = len(payload)
        if size <= 125:
            header = bytes((0x81, 0x80 | size))
        elif size <= 0xFFFF:
            header = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
        self.transport.write(header + b"\0\0\0\0" + payload)

    def on_text(self, now: int, payload: bytes) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            head, found, buffer = buffer.partition(b"\r\n\r\n")
            if not found:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.upgraded = True
            self.opened.set_result(None)
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
            if opcode == 0x1:
                self.on_text(now, buffer[start:start + length])
            elif opcode == 0x9:  # ping: a pong with the same payload, masked with a zero key
                self.transport.write(bytes((0x8A, 0x80 | length)) + b"\0\0\0\0" + buffer[start:start + length])
            elif opcode == 0x8:
                self.transport.close()
            at = start + length
        self.buffer = buffer[at:]


class Arrivals:
    """Each message frame's bytes and the time it arrived (parsed after the run), in two lists of
    untracked objects: a list of (time, bytes) tuples made every full garbage collection walk all of
    them, a stall of 100-200 ms in the receivers that showed up as the servers' p99."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.payloads: list[bytes] = []


class LeanReceiver(LeanSocket):
    def __init__(self, request: bytes, opened: asyncio.Future, arrivals: Arrivals) -> None:
        super().__init__(request, opened)
        self.times, self.payloads = arrivals.times, arrivals.payloads

    def on_text(self, now: int, payload: bytes) -> None:
        if payload.startswith(b'{"type":"message"'):
            self.times.append(now)
            self.payloads.append(payload)


class LeanSender(LeanSocket):
    """Sends the step's messages; passes on acks and errors, and skips the room's messages unparsed."""

    def __init__(self, request: bytes, opened: asyncio.Future, on_reply) -> None:
        super().__init__(request, opened)
        self.on_reply = on_reply

    def on_text(self, now: int, payload: bytes) -> None:
        if payload.startswith((b'{"type":"ack"', b'{"type":"error"')):
            self.on_reply(now, orjson.loads(payload))

    def send_message(self, client_id: str, body: str) -> None:
        self.send_text(orjson.dumps({"type": "message.send", "client_id": client_id, "body": body}).decode())


def upgrade_request(url: str, origin: str, cookie: str) -> tuple[str, int, bytes]:
    """Host, port and the HTTP request that opens a WebSocket at `url` as the user of `cookie`."""
    host_port, path = url.removeprefix("ws://").split("/", 1)
    host, port = host_port.split(":")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
               f"Cookie: sessionid={cookie}\r\n\r\n").encode()
    return host, int(port), request


async def open_lean(protocol, url: str, origin: str, cookie: str, *args):
    loop = asyncio.get_running_loop()
    host, port, request = upgrade_request(url, origin, cookie)
    opened = loop.create_future()
    transport, sock = await loop.create_connection(functools.partial(protocol, request, opened, *args), host, port)
    await opened
    return transport, sock


async def _receive(url: str, origin: str, cookies: list[str], ready, control, results, stack: str) -> None:
    """Receivers of one instance of `stack` ("chat", or "seed": the seed stack, where `url` is its port)."""
    from bench import seed

    loop = asyncio.get_running_loop()
    arrivals = Arrivals()
    transports = []
    for cookie in cookies:
        if stack == "seed":
            transport, _ = await seed.open_socket(seed.SeedReceiver, url, arrivals)
        else:
            transport, _ = await open_lean(LeanReceiver, url, origin, cookie, arrivals)
        transports.append(transport)
        ready.put(1)
    start_cpu = own_cpu()
    await loop.run_in_executor(None, control.get)  # "stop"
    # Frames still on their way after a saturated step are late, not lost: wait until none has come
    # for a second (at most a minute), so "lost" counts only frames that never arrive.
    drained_by = time.monotonic() + 60
    while arrivals.times and time.time_ns() - arrivals.times[-1] < 1e9 and time.monotonic() < drained_by:
        await asyncio.sleep(0.2)
    cpu = own_cpu() - start_cpu
    closed = sum(transport.is_closing() for transport in transports)  # by the server, during the run
    for transport in transports:
        transport.close()
    latencies: dict[int, list[float]] = {}
    inbound: dict[int, list[float]] = {}  # client send -> the server's created_at (start of the send action)
    counts: dict[int, int] = {}
    for now, payload in zip(arrivals.times, arrivals.payloads, strict=True):
        if stack == "seed":
            frame, body = None, seed.message_body(payload)
        else:
            frame = orjson.loads(payload)
            body = frame["body"]
        step, sent_ns, _ = body.split(":", 2)
        step = int(step)
        counts[step] = counts.get(step, 0) + 1
        latencies.setdefault(step, []).append((now - int(sent_ns)) / 1e6)
        if frame is not None:
            created_ns = datetime.fromisoformat(frame["created_at"]).timestamp() * 1e9
            inbound.setdefault(step, []).append((created_ns - int(sent_ns)) / 1e6)
    results.put({"stack": stack, "receivers": len(cookies), "closed": closed, "counts": counts, "latencies": latencies,
                 "inbound": inbound, "cpu": cpu})


def run_lean(coroutine):
    """Runs the load generator's side on uvloop when it is installed (less CPU a frame)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def receiver_process(url, origin, cookies, ready, control, results, stack="chat") -> None:
    run_lean(_receive(url, origin, cookies, ready, control, results, stack))


async def send_steps(endpoints: dict[str, list[tuple]], cookies: list[str], schedule: list[tuple[str, int]],
                     seconds: float, stack_cpu: StackCpu) -> list[dict]:
    """Each step (stack, messages/s), every sender socket of that stack sends its share of the rate;
    real users each send a little. Sender sockets alternate between the stack's endpoints, as a load
    balancer spreads them: `(url, origin)` for the chat, `(port,)` for the seed stack."""
    from bench import seed
    sent_at: dict[str, int] = {}
    acks: dict[int, list[float]] = {}
    errors = 0

    def on_reply(now: int, frame: dict) -> None:
        nonlocal errors
        if frame["type"] == "ack":
            step = int(frame["client_id"].split("-")[0])
            acks.setdefault(step, []).append((now - sent_at.pop(frame["client_id"])) / 1e6)
        else:
            errors += 1

    async def send_share(sock, index: int, step: int, rate: float, began: float, sockets: list) -> int:
        interval, count = 1.0 / rate, int(rate * seconds)
        # Each sender keeps its own phase, so the step's messages arrive evenly spread, not in
        # bursts of one message per sender (which the latency would then measure).
        phase = index * interval / len(sockets)
        for n in range(count):
            delay = began + phase + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            cid = f"{step}-{index}-{n}"
            now = time.time_ns()
            if chat:
                sent_at[cid] = now
            sock.send_message(cid, f"{step}:{now}:{RUN}")  # the seed's receivers count their run's only
        return count

    transports, senders = [], {}
    for stack, stack_endpoints in endpoints.items():
        senders[stack] = []
        for index, cookie in enumerate(cookies):
            endpoint = stack_endpoints[index % len(stack_endpoints)]
            if stack == "seed":
                transport, sock = await seed.open_socket(seed.SeedSender, *endpoint)
            else:
                transport, sock = await open_lean(LeanSender, *endpoint, cookie, on_reply)
            transports.append(transport)
            senders[stack].append(sock)
    steps = []
    try:
        for step, (stack, rate) in enumerate(schedule):
            sockets, chat = senders[stack], stack == "chat"
            speed_ms = cpu_speed_ms()  # the machine's speed as the step starts (the stack is quiet)
            load = os.getloadavg()[0]  # others' work on the shared cores shows here too
            cpu0, machine0, began = own_cpu(), stack_cpu.sample(), time.perf_counter()
            counts = await asyncio.gather(*(send_share(sock, i, step, rate / len(sockets), began, sockets)
                                            for i, sock in enumerate(sockets)))
            elapsed = time.perf_counter() - began
            cores = StackCpu.cores(machine0, stack_cpu.sample(), elapsed)
            await asyncio.sleep(2.0)  # let stragglers and acks arrive before the next step
            steps.append({"stack": stack, "rate": rate, "sent": sum(counts), "send_seconds": elapsed,
                          "sender_cpu": own_cpu() - cpu0, "ack_ms": acks.get(step, []), "cores": cores,
                          "speed_ms": speed_ms, "loadavg_1m": round(load, 2)})
        steps[-1]["send_errors"] = errors
    finally:
        for transport in transports:
            transport.close()
    return steps


def run(server: str, receivers: int, rates: list[int], seconds: float, senders: int = 20, *,
        one_user: bool = False, race: bool = True, rounds: int = 3) -> dict:
    """One server's run: with `race`, each rate in `rounds` interleaved rounds against the seed stack
    (chat, seed, chat, seed, ...) on the same load generator; `one_user`: every receiver and sender
    socket is one user's (distinct users otherwise)."""
    setup_django()
    web, seeds, workers, procs = [], [], [], []
    try:
        return _run(server, receivers, rates, seconds, senders, one_user, race, rounds, web, seeds, workers, procs)
    finally:  # whatever was started, also when a step failed
        for proc in procs:
            proc.join(10)
        for srv in [*web, *seeds, *workers]:
            srv.stop()


def _run(server: str, receivers: int, rates: list[int], seconds: float, senders: int, one_user: bool, race: bool,
         rounds: int, web: list, seeds: list, workers: list, procs: list) -> dict:
    from bench import seed
    from tests.support import Process, WebServer

    for i in range(2):
        web.append(WebServer(f"bench-{server}-{i}-{RUN}", child_env(), server=server).start())
    workers.append(Process(f"bench-worker-{RUN}", [PYTHON, "manage.py", "consume_messages",
                                                    "--group", f"bench-{RUN}"], child_env()).start())
    worker = workers[0]
    if race:
        seed.install()
        for i in range(2):
            seeds.append(seed.start(f"bench-seed-{i}-{RUN}", child_env()["REDIS_URL"]))
    from django.contrib.auth import get_user_model

    from chat.services.rooms import room_create

    owner = get_user_model().objects.create_user(username=f"owner-{RUN}")
    room = room_create(owner=owner, name=f"bench {RUN}", private=False)
    if one_user:
        cookies = [users_with_cookies(1, f"r{server}")[0][1]] * (receivers + senders)
    else:
        cookies = [c for _, c in users_with_cookies(receivers + senders, f"r{server}")]
    sender_cookies, cookies = cookies[:senders], cookies[senders:]
    ctx = mp.get_context("fork")
    ready, results = ctx.Queue(), ctx.Queue()
    controls = []
    half = len(cookies) // 2
    receiver_sets = [("chat", f"ws://127.0.0.1:{srv.port}/ws/chat/{room.slug}/", srv.url, part)
                     for srv, part in zip(web, (cookies[:half], cookies[half:]), strict=True)]
    if race:
        receiver_sets += [("seed", srv.port, seed.ORIGIN, part)
                          for srv, part in zip(seeds, (cookies[:half], cookies[half:]), strict=True)]
    for stack, url, origin, part in receiver_sets:
        control = ctx.Queue()
        proc = ctx.Process(target=receiver_process, args=(url, origin, part, ready, control, results, stack),
                           daemon=True)  # never outlive a failed run
        proc.start()
        procs.append(proc)
        controls.append(control)
    for _ in range(sum(len(part) for *_, part in receiver_sets)):
        ready.get(timeout=120)
    endpoints = {"chat": [(f"ws://127.0.0.1:{srv.port}/ws/chat/{room.slug}/", srv.url) for srv in web]}
    if race:
        endpoints["seed"] = [(srv.port,) for srv in seeds]
    stacks = list(endpoints)
    # Steps 0 (one per stack) warm up (producer bootstrap, the room's first seq) and are left out.
    schedule = [(stack, 10) for stack in stacks]
    schedule += [(stack, rate) for rate in rates for _ in range(rounds if race else 1) for stack in stacks]
    stack_cpu = StackCpu({"web": [srv.proc.pid for srv in web], "worker": [worker.proc.pid],
                          "seed": [srv.proc.pid for srv in seeds],
                          "receivers": [proc.pid for proc in procs], "senders": [os.getpid()]})
    steps = run_lean(send_steps(endpoints, sender_cookies, schedule, seconds, stack_cpu))
    for control in controls:
        control.put("stop")
    parts = [results.get(timeout=120) for _ in procs]
    report, seen = [], {}
    for step, entry in enumerate(steps):
        if step < len(stacks):
            continue
        stack = entry["stack"]
        mine = [part for part in parts if part["stack"] == stack]
        key = (stack, entry["rate"])
        seen[key] = seen.get(key, 0) + 1
        latencies = [v for part in mine for v in part["latencies"].get(step, [])]
        inbound = [v for part in mine for v in part["inbound"].get(step, [])]
        delivered = sum(part["counts"].get(step, 0) for part in mine)
        expected = entry["sent"] * len(cookies)
        report.append({
            "server": server, "receivers": len(cookies), "users": "one" if one_user else "distinct",
            "senders": senders, "stack": stack, "round": seen[key], "rate_msgs": entry["rate"],
            "offered_deliveries_per_s": entry["rate"] * len(cookies),
            "delivered_per_s": round(delivered / max(entry["send_seconds"], 1e-9)),
            "expected": expected, "delivered": delivered, "lost": expected - delivered,
            "p50_ms": round(percentile(latencies, 50), 2), "p90_ms": round(percentile(latencies, 90), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "max_ms": round(max(latencies, default=float("nan")), 2),
            # Where the time goes: client send -> the server starts the send action (created_at).
            "in_p50_ms": round(percentile(inbound, 50), 2), "in_p99_ms": round(percentile(inbound, 99), 2),
            "ack_p50_ms": round(percentile(entry["ack_ms"], 50), 2),
            "ack_p99_ms": round(percentile(entry["ack_ms"], 99), 2),
            "sender_behind": round(entry["send_seconds"] - seconds, 2),
            "sender_cpu_pct": round(100 * entry["sender_cpu"] / max(entry["send_seconds"], 1e-9)),
            "speed_ms": entry["speed_ms"],  # bench.common.cpu_speed_ms before the step: lower is a faster machine
            "loadavg_1m": entry["loadavg_1m"],
            # Cores each part used during the step (the machine has os.cpu_count()).
            **{f"cores_{part}": value for part, value in entry["cores"].items()},  # cores_machine: everything
            "cores_total": round(sum(v for k, v in entry["cores"].items() if k not in ("machine", "steal")), 2),
        })
    receiver_cpu = sum(part["cpu"] for part in parts)
    closed = {stack: sum(part["closed"] for part in parts if part["stack"] == stack) for stack in stacks}
    return {"steps": report, "loadgen_receiver_cpu_s": round(receiver_cpu, 1), "senders": senders,
            "receivers_closed_by_server": closed}


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)  # NaN (a step with nothing delivered) left out
    if not values:
        return float("nan")
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def race_rows(steps: list[dict]) -> list[dict]:
    """Per server, receivers, users and offered load: the chat's and the seed stack's medians over
    their interleaved rounds (p50, p99), the ratios chat/seed and what each lost in all rounds."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in steps:
        key = (row["server"], row["receivers"], row.get("users", "distinct"), row["offered_deliveries_per_s"])
        groups.setdefault(key, {}).setdefault(row.get("stack", "chat"), []).append(row)
    out = []
    for (server, receivers, users, offered), stacks in groups.items():
        row = {"server": server, "receivers": receivers, "users": users, "offered_deliveries_per_s": offered}
        for stack, rows in stacks.items():
            row[f"{stack}_rounds"] = len(rows)
            row[f"{stack}_p50_ms"] = round(median([r["p50_ms"] for r in rows]), 2)
            row[f"{stack}_p99_ms"] = round(median([r["p99_ms"] for r in rows]), 2)
            row[f"{stack}_lost"] = sum(r["lost"] for r in rows)
        if "seed" in stacks:
            for q in ("p50", "p99"):
                seed_ms = row[f"seed_{q}_ms"]
                row[f"ratio_{q}"] = round(row[f"chat_{q}_ms"] / seed_ms, 2) if seed_ms else float("nan")
        out.append(row)
    return out


def print_report(result: dict) -> None:
    rows = result["rows"]
    columns = ["server", "receivers", "users", "stack", "round", "offered_deliveries_per_s", "delivered_per_s",
               "lost", "p50_ms", "p90_ms", "p99_ms", "max_ms", "in_p50_ms", "in_p99_ms", "ack_p50_ms", "ack_p99_ms",
               "sender_behind", "sender_cpu_pct", "speed_ms", "loadavg_1m"]
    print_table(rows, columns)
    print(f"\nCores used per step (of {os.cpu_count()}): web instances (or the seed stack's servers), worker, "
          "services, load generator, the sum of those, the whole machine (with anything else that ran) and steal "
          "(time the hypervisor gave these cores to other guests: a step with much of it ran on a disturbed machine)")
    parts = sorted({c for r in rows for c in r if c.startswith("cores_")
                    and c not in ("cores_total", "cores_machine", "cores_steal")})
    print_table(rows, ["server", "receivers", "users", "stack", "round", "offered_deliveries_per_s", *parts,
                       "cores_total", "cores_machine", "cores_steal"])
    race = race_rows(rows)
    if any("seed_p99_ms" in r for r in race):
        print("\nAgainst the seed stack: medians over the interleaved rounds, ratio chat/seed (below 1: the chat "
              "is faster), frames lost in all rounds")
        print_table(race, ["server", "receivers", "users", "offered_deliveries_per_s", "chat_p50_ms", "seed_p50_ms",
                           "ratio_p50", "chat_p99_ms", "seed_p99_ms", "ratio_p99", "chat_lost", "seed_lost",
                           "chat_rounds"])


def plot(rows: list[dict], path: Path) -> bool:
    """p50 and p99 (medians over rounds) against offered load, a panel per server, the chat in solid
    lines and the seed stack dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    race = race_rows(rows)
    servers = sorted({r["server"] for r in race})
    fig, axes = plt.subplots(1, len(servers), figsize=(7 * len(servers), 5.5), sharey=True, squeeze=False)
    for ax, server in zip(axes[0], servers, strict=True):
        for receivers, users in sorted({(r["receivers"], r["users"]) for r in race if r["server"] == server}):
            mine = sorted((r for r in race if (r["server"], r["receivers"], r["users"]) == (server, receivers, users)),
                          key=lambda r: r["offered_deliveries_per_s"])
            x = [r["offered_deliveries_per_s"] for r in mine]
            label = f"{receivers} receivers{', one user' if users == 'one' else ''}"
            for stack, style in (("chat", "-"), ("seed", "--")):
                if f"{stack}_p99_ms" not in mine[0]:
                    continue
                line, = ax.plot(x, [r[f"{stack}_p99_ms"] for r in mine], style, marker="s",
                                label=f"{stack}, {label}, p99")
                ax.plot(x, [r[f"{stack}_p50_ms"] for r in mine], style, marker="o", color=line.get_color(),
                        alpha=0.5, label=f"{stack}, {label}, p50")
        ax.set_xlabel("offered deliveries/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"{server} vs the seed stack (dashed), two instances each")
    axes[0][0].set_ylabel("send→receive latency (ms), median over rounds")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="daphne,uvicorn")
    parser.add_argument("--receivers", default="200,500", help="receiver counts, each a run of its own")
    parser.add_argument("--offered", default="10000,20000,40000,80000,160000,300000",
                        help="offered deliveries/s per step (messages/s = offered / receivers)")
    parser.add_argument("--rates", default=None, help="messages/s per step instead of --offered")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--senders", type=int, default=20,
                        help="sender sockets sharing each step's rate, spread over both instances")
    parser.add_argument("--one-user", default="500", metavar="RECEIVERS",
                        help="receiver counts of the one-user runs: every receiver and sender socket is one "
                             "user's ('' for none)")
    parser.add_argument("--one-user-senders", type=int, default=4, help="sender sockets in the one-user runs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (chat, seed) per step")
    parser.add_argument("--no-seed", action="store_true", help="the chat alone, one round per step")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    rows, meta = [], {}
    runs = [(receivers, False, args.senders) for receivers in (int(n) for n in args.receivers.split(",") if n)]
    runs += [(receivers, True, args.one_user_senders) for receivers in (int(n) for n in args.one_user.split(",") if n)]
    for server in args.servers.split(","):
        for receivers, one_user, senders in runs:
            rates = args.rates or ",".join(str(max(1, round(int(o) / receivers))) for o in args.offered.split(","))
            who = "sockets of one user" if one_user else "distinct users"
            print(f"== {server}: {receivers} receivers ({who}) over two instances, {senders} senders, rates {rates} "
                  f"msg/s{'' if args.no_seed else f', {args.rounds} rounds against the seed stack'}", flush=True)
            # Each run is a fresh process, so Django and the stack start clean.
            name = f"{server}-{receivers}{'-one-user' if one_user else ''}"
            result_path = out / f"fanout-{name}.json"
            options = {"server": server, "receivers": receivers, "rates": [int(r) for r in rates.split(",")],
                       "seconds": args.seconds, "senders": senders, "one_user": one_user,
                       "race": not args.no_seed, "rounds": args.rounds}
            subprocess.run([sys.executable, "-m", "bench.fanout_one", json.dumps(options), str(result_path)],
                           check=True, cwd=ROOT)
            result = json.loads(result_path.read_text())
            rows += result["steps"]
            meta[name] = {"loadgen_receiver_cpu_s": result["loadgen_receiver_cpu_s"], "senders": senders,
                          "receivers_closed_by_server": result["receivers_closed_by_server"]}
            if any(result["receivers_closed_by_server"].values()):
                print(f"receivers closed by the servers: {result['receivers_closed_by_server']}", flush=True)
    summary = {**env, "settings": vars(args), "rows": rows, "race": race_rows(rows), "meta": meta}
    print()
    print_report(summary)
    (out / "fanout.json").write_text(json.dumps(summary, indent=2))
    if plot(rows, out / "fanout.png"):
        print(f"\nplot: {out / 'fanout.png'}")
    print(f"json: {out / 'fanout.json'}")


if __name__ == "__main__":
    main()
