"""Joins and idle connections: how fast one web process lets sockets in, how many it holds, and at
what memory.

For each server (daphne, uvicorn) it starts ONE web instance. First idle sockets to one room in
cumulative steps, each counted once its `hello` arrived (session, user, room, access, presence in
Redis, the socket cap: the whole join): per step the sockets held (client and server's gauge), the
server's RSS, RSS per connection above the baseline (and the step's marginal cost), the time to open
the step, the CPU of the server and of the load generator, and the server's full garbage
collections in the step (how many, their pauses in seconds). Then it closes everything, waits for
the server's `chat_connections_open` to be 0 and for its CPU to go quiet (the leaves' clean-up done:
`quiet_s`) and prints the RSS left. Then the join rate: `--joins`
sockets of `--users` real sessions opened as fast as the instance lets them in (`--procs`
load-generator processes, `--concurrency` handshakes in flight each); a socket shed with 1013
tries again after its close reason's `retry_after` (1 s when the server sent none). It prints
joins/s, the time to hello (p50, p99, from the first try), sheds, failures, and the server's and
the load generator's CPU per join; then closes them. The load generator speaks
WebSocket by hand (a few microseconds a frame, bench.fanout's `LeanSocket`), so it leaves the cores
to the server. Writes results/connections.{json,png}. Targets: >= 1 500 joins/s per process;
>= 20k idle sockets per process at <= 30 KB each.

    .venv/bin/python -m bench.connections --steps 1000,10000,20000
"""

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import re
import resource
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.common import (
    ROOT,
    RUN,
    Progress,
    child_env,
    environment,
    own_cpu,
    print_table,
    process_cpu,
    rss_kb,
    setup_django,
    users_with_cookies,
)
from bench.fanout import LeanSocket, percentile, upgrade_request

TARGET_SOCKETS, TARGET_KB, TARGET_JOINS = 20_000, 30, 1_500
STEP_TIMEOUT = 3600  # seconds: a slow server on a loaded machine can take many minutes a step
JOIN_COLUMNS = ["server", "joins", "joined", "join_s", "joins_per_s", "hello_p50_ms", "hello_p99_ms", "shed",
                "failed", "server_ms_per_join", "loadgen_ms_per_join", "loadavg"]
COLUMNS = ["server", "step", "held", "gauge", "failed", "dropped", "open_s", "opened_per_s", "rss_mb",
           "kb_per_conn", "marginal_kb", "server_cpu_s", "loadgen_cpu_s", "gc_full", "gc_full_s"]
CLOSE_COLUMNS = ["server", "closed", "close_s", "gauge_after", "quiet_s", "baseline_mb", "peak_mb", "after_close_mb",
                 "given_back_mb", "kept_mb"]


def metric(url: str, sample: str) -> float | None:
    """One sample of the server's /metrics; None when the server does not answer or has no such sample."""
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    found = re.search(rf"^{re.escape(sample)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else None


def gauge(url: str) -> int | None:
    value = metric(url, "chat_connections_open")
    return None if value is None else int(value)


def full_collections(url: str) -> tuple[int, float]:
    """The server's full garbage collections so far: how many, and their pauses in seconds."""
    return (int(metric(url, 'chat_gc_pause_seconds_count{generation="2"}') or 0),
            metric(url, 'chat_gc_pause_seconds_sum{generation="2"}') or 0.0)


def quiet(pid: int, timeout: float, window: float = 0.5, share: float = 0.05) -> float | None:
    """Seconds until the process used under `share` of a core for `window` seconds (its closed
    sockets' leaves processed: the gauge drops as a leave starts, its Redis clean-up follows), or
    None after `timeout`."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        cpu = process_cpu(pid)
        time.sleep(window)
        if process_cpu(pid) - cpu < share * window:
            return round(time.perf_counter() - began - window, 1)
    return None


def settled(predicate, timeout: float) -> bool:
    """Wait for a condition (polling it), without failing the run when it does not come."""
    from tests.support import wait_until

    try:
        wait_until(predicate, timeout, 0.2)
        return True
    except AssertionError:
        return False


# --- the load generator: one process holds its share of the sockets --------------------------------

class JoinSocket(LeanSocket):
    """A socket that waits for its first frame (`hello`) and remembers how the server closed it."""

    def __init__(self, request: bytes, opened: asyncio.Future, hello: asyncio.Future) -> None:
        super().__init__(request, opened)
        self.hello = hello
        self.close_code: int | None = None
        self.close_reason = ""

    def on_text(self, now: int, payload: bytes) -> None:
        if not self.hello.done():
            self.hello.set_result(payload)

    def data_received(self, data: bytes) -> None:
        # The server's close frame, for its code and reason (a shed socket's come with the 101).
        frames = data
        if not self.upgraded:
            _, found, frames = (self.buffer + data).partition(b"\r\n\r\n")
            frames = frames if found else b""
        at = 0
        while len(frames) - at >= 2:
            opcode, length = frames[at] & 0x0F, frames[at + 1] & 0x7F
            start = at + 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if length >= 126:
                length = int.from_bytes(frames[at + 2:start], "big")
            if opcode == 0x8 and length >= 2:
                self.close_code = int.from_bytes(frames[start:start + 2], "big")
                self.close_reason = frames[start + 2:start + length].decode(errors="replace")
            at = start + length
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        if not self.opened.done():  # before the upgrade: nobody waits for the hello yet
            self.opened.set_exception(ConnectionError(f"closed {self.close_code} before the upgrade"))
            self.hello.cancel()
        elif not self.hello.done():
            self.hello.set_exception(ConnectionError(f"closed {self.close_code}"))


async def _hold(index: int, url: str, origin: str, cookies: list[str], source: str, concurrency: int,
                commands, reports) -> None:
    loop = asyncio.get_running_loop()
    sockets: list[JoinSocket] = []
    failures: Counter = Counter()
    gate = asyncio.Semaphore(concurrency)  # in-flight handshakes: a burst past the listen backlog stalls
    waits: list[float] = []  # first try -> hello, per socket
    shed = 0
    opened = 0

    async def open_one(n: int, keep: list) -> None:
        nonlocal shed, opened
        first = time.perf_counter()
        for _ in range(100):
            async with gate:
                host, port, request = upgrade_request(url, origin, cookies[n % len(cookies)])
                up, hello = loop.create_future(), loop.create_future()
                sock = None
                try:
                    _, sock = await loop.create_connection(functools.partial(JoinSocket, request, up, hello), host,
                                                           port, local_addr=(source, 0))
                    await asyncio.wait_for(up, 60)
                    frame = await asyncio.wait_for(hello, 60)
                    if not frame.startswith(b'{"type":"hello"'):
                        raise ValueError(f"first frame {frame[:40]!r}")
                except (OSError, TimeoutError, ValueError) as exc:
                    if sock is not None and sock.close_code == 1013:  # shed: try again after the hint
                        shed += 1
                        hint = sock.close_reason.partition("retry_after=")[2]
                        retry = float(hint) if hint else 1.0
                    else:
                        failures[f"{type(exc).__name__} {sock.close_code if sock else ''}".strip()] += 1
                        if sock is not None:
                            sock.transport.close()
                        return
                else:
                    waits.append(time.perf_counter() - first)
                    keep.append(sock)
                    opened += 1
                    if opened % 50 == 0:
                        reports.put(("progress", 50))
                    return
            await asyncio.sleep(retry)
        failures["shed 100 times"] += 1

    while True:
        command, arg = await loop.run_in_executor(None, commands.get)
        cpu = own_cpu()
        if command in ("open", "joins"):
            failures.clear()
            waits.clear()
            shed = 0
            keep = sockets if command == "open" else []
            wanted = arg - len(sockets) if command == "open" else arg
            began = time.perf_counter()
            await asyncio.gather(*(open_one(n, keep) for n in range(wanted)))
            elapsed = time.perf_counter() - began
            dropped = Counter(str(s.close_code) for s in sockets if s.transport.is_closing())
            reports.put((command, index, len(sockets) if command == "open" else len(keep), own_cpu() - cpu,
                         dict(failures), dict(dropped), elapsed, list(waits), shed))
            if command == "joins":  # the join-rate sockets go before the idle steps
                for sock in keep:
                    sock.transport.close()
        elif command == "close":
            for sock in sockets:
                sock.transport.close()
            reports.put(("closed", index, len(sockets), own_cpu() - cpu))
            sockets.clear()
        else:  # "stop"
            return


def loadgen(*args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_hold(*args))


def _collect(reports, procs: int, progress) -> list:
    results = []
    while len(results) < procs:
        report = reports.get(timeout=STEP_TIMEOUT)
        if report[0] == "progress":
            progress.update(report[1])
        else:
            results.append(report)
    return results


# --- one server -----------------------------------------------------------------------------------

def measure(server: str, slug: str, cookies: list[str], steps: list[int], procs: int, concurrency: int,
            joins: int) -> dict:
    from django.db import connections

    from tests.support import WebServer

    web = WebServer(f"bench-connections-{server}-{RUN}", child_env(), server=server).start()
    pid = web.proc.pid
    ctx = mp.get_context("fork")
    reports = ctx.Queue()
    commands = [ctx.Queue() for _ in range(procs)]
    children = []
    rows: list[dict] = []
    join_row = None
    try:
        settled(lambda: gauge(web.url) == 0, 10)  # /metrics answers: the app is fully loaded
        connections.close_all()  # the children must not share this process's database connection
        url = f"ws://127.0.0.1:{web.port}/ws/chat/{slug}/"
        for k in range(procs):
            # Each process shifts the cookies so users spread evenly; its own 127.0.0.x source.
            mine = cookies[k:] + cookies[:k]
            child = ctx.Process(target=loadgen, args=(k, url, web.url, mine, f"127.0.0.{k + 2}",
                                                      concurrency,
                                                      commands[k], reports), daemon=True)
            child.start()
            children.append(child)
        baseline = rss_kb(pid)
        held, rss = 0, baseline
        for step in steps:
            began, server_cpu, collections = time.perf_counter(), process_cpu(pid), full_collections(web.url)
            for k, queue in enumerate(commands):
                queue.put(("open", step // procs + (1 if k < step % procs else 0)))
            with Progress(f"connections: {server} opening", total=step, unit="sockets", initial=held) as progress:
                results = _collect(reports, procs, progress)
            open_s = time.perf_counter() - began
            previous_held, previous_rss = held, rss
            held = sum(r[2] for r in results)
            settled(lambda held=held: gauge(web.url) == held, 30)  # the server counted (or dropped) them all
            rss, now_gauge, collections_after = rss_kb(pid), gauge(web.url), full_collections(web.url)
            loadgen_cpu = sum(r[3] for r in results)
            row = {"server": server, "step": step, "held": held, "gauge": now_gauge,
                   "failed": sum(sum(r[4].values()) for r in results),
                   "dropped": sum(sum(r[5].values()) for r in results),
                   "shed": sum(r[8] for r in results),
                   "failures": dict(sum((Counter(r[4]) for r in results), Counter())),
                   "drop_codes": dict(sum((Counter(r[5]) for r in results), Counter())),
                   "open_s": round(open_s, 1),
                   "opened_per_s": round((held - previous_held) / max(open_s, 1e-9)),
                   "rss_mb": round(rss / 1024, 1),
                   "kb_per_conn": round((rss - baseline) / held, 1) if held else None,
                   "marginal_kb": round((rss - previous_rss) / (held - previous_held), 1)
                   if held > previous_held else None,
                   "server_cpu_s": round(process_cpu(pid) - server_cpu, 1),
                   "loadgen_cpu_s": round(loadgen_cpu, 1),
                   "loadgen_cpu_pct": round(100 * loadgen_cpu / max(open_s, 1e-9)),
                   "gc_full": collections_after[0] - collections[0],
                   "gc_full_s": round(collections_after[1] - collections[1], 2)}
            rows.append(row)
            print("  ".join(f"{c}={row[c]}" for c in [*COLUMNS, "failures", "drop_codes"]), flush=True)
        peak = rss
        began = time.perf_counter()
        for queue in commands:
            queue.put(("close", None))
        closed = sum(reports.get(timeout=STEP_TIMEOUT)[2] for _ in range(procs))
        # Memory given back: measured once the server has let every socket go.
        zero = settled(lambda: gauge(web.url) == 0, 180)
        close_s = time.perf_counter() - began
        # The join rate below is measured on an instance done with the closes, not still working
        # through their leaves (which ran into the joins after a 10,000 step: 241 joins/s for 694).
        quiet_s = quiet(pid, 180)
        after = rss_kb(pid)
        close = {"server": server, "closed": closed, "gauge_zero": zero, "gauge_after": gauge(web.url),
                 "close_s": round(close_s, 1), "quiet_s": quiet_s, "baseline_mb": round(baseline / 1024, 1),
                 "peak_mb": round(peak / 1024, 1), "after_close_mb": round(after / 1024, 1),
                 "given_back_mb": round((peak - after) / 1024, 1), "kept_mb": round((after - baseline) / 1024, 1)}
        print("  ".join(f"{c}={close[c]}" for c in CLOSE_COLUMNS), flush=True)
        if joins:  # after the memory figures: the join rate's sockets would leave the baseline high
            join_row = _join_rate(server, web, pid, commands, reports, procs, joins)
    finally:
        for queue in commands:
            queue.put(("stop", None))
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
        web.stop()
    return {"joins": join_row, "steps": rows, "close": close, "log": str(web.log_path)}


def _join_rate(server: str, web, pid: int, commands, reports, procs: int, joins: int) -> dict:
    """Open `joins` sockets as fast as the instance lets them in, then close them."""
    import os

    server_cpu = process_cpu(pid)
    for k, queue in enumerate(commands):
        queue.put(("joins", joins // procs + (1 if k < joins % procs else 0)))
    with Progress(f"connections: {server} joining", total=joins, unit="sockets") as progress:
        results = _collect(reports, procs, progress)
    elapsed = max(r[6] for r in results)
    server_cpu = process_cpu(pid) - server_cpu
    joined = sum(r[2] for r in results)
    waits = sorted(w for r in results for w in r[7])
    row = {"server": server, "joins": joins, "joined": joined, "join_s": round(elapsed, 2),
           "joins_per_s": round(joined / max(elapsed, 1e-9)),
           "hello_p50_ms": round(1000 * percentile(waits, 50), 1),
           "hello_p99_ms": round(1000 * percentile(waits, 99), 1),
           "shed": sum(r[8] for r in results), "failed": sum(sum(r[4].values()) for r in results),
           "failures": dict(sum((Counter(r[4]) for r in results), Counter())),
           "server_ms_per_join": round(1000 * server_cpu / max(joined, 1), 2),
           "loadgen_ms_per_join": round(1000 * sum(r[3] for r in results) / max(joined, 1), 2),
           "loadavg": round(os.getloadavg()[0], 2)}
    print("  ".join(f"{c}={row[c]}" for c in [*JOIN_COLUMNS, "failures"]), flush=True)
    settled(lambda: gauge(web.url) == 0, 60)  # the join-rate sockets are gone before the idle steps
    return row


# --- report ----------------------------------------------------------------------------------------

def print_report(result: dict) -> None:
    joins = [server["joins"] for server in result["servers"].values() if server["joins"]]
    if joins:
        print_table(joins, JOIN_COLUMNS)
        print()
    rows = [r for server in result["servers"].values() for r in server["steps"]]
    print_table(rows, COLUMNS)
    print()
    print_table([s["close"] for s in result["servers"].values()], CLOSE_COLUMNS)
    print(f"\ntargets: >= {TARGET_JOINS} joins/s per process; >= {TARGET_SOCKETS} idle sockets per process at "
          f"<= {TARGET_KB} KB each")
    for server, data in result["servers"].items():
        if data["joins"]:
            rate = data["joins"]["joins_per_s"]
            print(f"  {server}: {rate} joins/s -> {'meets' if rate >= TARGET_JOINS else 'misses'} the target")
        last = data["steps"][-1]
        ok = last["held"] >= TARGET_SOCKETS and last["kb_per_conn"] is not None and last["kb_per_conn"] <= TARGET_KB
        print(f"  {server}: {last['held']} held at {last['kb_per_conn']} KB each -> "
              f"{'meets' if ok else 'misses'} the target")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss_ax, kb_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for server, data in result["servers"].items():
        steps, close = data["steps"], data["close"]
        line = rss_ax.plot([0] + [r["held"] for r in steps], [close["baseline_mb"]] + [r["rss_mb"] for r in steps],
                           marker="o", label=server)[0]
        rss_ax.plot([0], [close["after_close_mb"]], marker="x", markersize=10, color=line.get_color(),
                    linestyle="none", label=f"{server} after close")
        kb_ax.plot([r["held"] for r in steps], [r["kb_per_conn"] for r in steps], marker="o", label=server)
    rss_ax.set_xlabel("idle sockets held")
    rss_ax.set_ylabel("server RSS (MB)")
    rss_ax.set_title("RSS of one web process")
    kb_ax.axhline(TARGET_KB, color="grey", linestyle="--", label=f"target {TARGET_KB} KB")
    kb_ax.set_xlabel("idle sockets held")
    kb_ax.set_ylabel("(RSS - baseline) / sockets (KB)")
    kb_ax.set_title("Memory per connection")
    for ax in (rss_ax, kb_ax):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="daphne,uvicorn")
    parser.add_argument("--steps", default="1000,10000,20000", help="sockets held after each step (cumulative)")
    parser.add_argument("--joins", type=int, default=3000, help="sockets of the join-rate measure (0: none)")
    parser.add_argument("--users", type=int, default=50, help="users whose sessions the sockets share")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per process")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Every socket is a file on both sides: the server (started after this) inherits the limit, raised
    # past the hard one where this process may (root), else up to it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(hard, max(steps[-1], args.joins) + 5000)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit < max(steps[-1], args.joins) + 1000:
        print(f"warning: the file limit ({limit}) is close to {steps[-1]} sockets", flush=True)

    env = environment()
    setup_django("chat_bench_connections")
    from django.contrib.auth import get_user_model

    from chat.services.rooms import room_create

    owner = get_user_model().objects.create_user(username=f"connections-{RUN}")
    cookies = [c for _, c in users_with_cookies(args.users, "conn")]
    result = {**env, "settings": {**vars(args), "nofile": [soft, hard, limit]}, "servers": {}}
    for server in args.servers.split(","):
        # A room per server: the presence of one run does not show in the other's.
        room = room_create(owner=owner, name=f"idle {server} {RUN}", private=False)
        print(f"== {server}: one instance, idle sockets to one room in steps {args.steps}, {args.users} users, "
              f"{args.procs} load-generator processes", flush=True)
        result["servers"][server] = measure(server, room.slug, cookies, steps, args.procs, args.concurrency,
                                            args.joins)
    print()
    print_report(result)
    (out / "connections.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "connections.png")
    print(f"\njson: {out / 'connections.json'}\nplot: {out / 'connections.png'}")


if __name__ == "__main__":
    main()
