"""Idle connections: how many WebSockets one web process holds, and at what memory.

For each server (daphne, uvicorn) it starts ONE web instance and opens idle, authenticated sockets
to one room in steps (each waits for its `hello`, so the connection is fully set up: session,
room, presence in Redis). Per step it prints the sockets held (client and server's gauge), the
server's RSS, RSS per connection above the baseline (and the step's marginal cost), the time to
open the step, the CPU of the server and of the load generator, and the server's full garbage
collections in the step (how many, their pauses in seconds). Then it closes everything,
waits for the server's `chat_connections_open` to be 0 and prints the RSS left. Writes
results/connections.{json,png}. Target: >= 10k idle sockets per process at <= 50 KB each.

    .venv/bin/python -m bench.connections --steps 1000,5000,10000
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import re
import resource
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import websockets

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

TARGET_SOCKETS, TARGET_KB = 10_000, 50
STEP_TIMEOUT = 3600  # seconds: joins cost more as the room fills, so a 10k step can take many minutes
COLUMNS = ["server", "step", "held", "gauge", "failed", "dropped", "open_s", "opened_per_s", "rss_mb",
           "kb_per_conn", "marginal_kb", "server_cpu_s", "loadgen_cpu_s", "gc_full", "gc_full_s"]
CLOSE_COLUMNS = ["server", "closed", "close_s", "gauge_after", "baseline_mb", "peak_mb", "after_close_mb",
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


def settled(predicate, timeout: float) -> bool:
    """Wait for a condition (polling it), without failing the run when it does not come."""
    from tests.support import wait_until

    try:
        wait_until(predicate, timeout, 0.2)
        return True
    except AssertionError:
        return False


# --- the load generator: one process holds its share of the sockets --------------------------------

async def _hold(index: int, url: str, origin: str, cookies: list[str], source: str, concurrency: int,
                commands, reports) -> None:
    sockets: list = []
    failures: Counter = Counter()
    dropped: Counter = Counter()  # sockets the server closed while we held them, by close code
    drains: set[asyncio.Task] = set()
    gate = asyncio.Semaphore(concurrency)  # in-flight handshakes: a burst past the listen backlog stalls
    closing = False
    opened = 0

    async def drain(ws) -> None:
        # Read whatever comes (presence frames): a socket that does not read is cut with 4408.
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
        if not closing:
            dropped[str(ws.close_code)] += 1

    async def open_one(n: int) -> None:
        nonlocal opened
        ws = None
        async with gate:
            try:
                ws = await websockets.connect(
                    url, origin=origin, additional_headers={"Cookie": f"sessionid={cookies[n % len(cookies)]}"},
                    compression=None, max_size=None, open_timeout=60,
                    ping_interval=None,  # idle: the server's own pings keep it alive
                    local_addr=(source, 0))  # a source address per process: local ports do not run short
                first = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                if first["type"] != "hello":
                    raise ValueError(f"first frame {first['type']}")
            except (OSError, TimeoutError, ValueError, websockets.WebSocketException) as exc:
                failures[type(exc).__name__] += 1
                if ws is not None:  # connected but no hello in time: do not leave it open
                    await ws.close()
                return
        sockets.append(ws)
        task = asyncio.ensure_future(drain(ws))
        drains.add(task)
        task.add_done_callback(drains.discard)
        opened += 1
        if opened % 50 == 0:
            reports.put(("progress", 50))

    async def close_one(ws) -> None:
        async with gate:
            await ws.close()

    loop = asyncio.get_running_loop()
    counter = 0
    while True:
        command, arg = await loop.run_in_executor(None, commands.get)
        cpu = own_cpu()
        if command == "open":
            wanted = arg - len(sockets)
            await asyncio.gather(*(open_one(n) for n in range(counter, counter + wanted)))
            counter += wanted
            reports.put(("opened", index, len(sockets), own_cpu() - cpu, dict(failures), dict(dropped)))
        else:  # "close"
            closing = True
            await asyncio.gather(*(close_one(ws) for ws in sockets))
            reports.put(("closed", index, len(sockets), own_cpu() - cpu))
            return


def loadgen(*args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_hold(*args))


# --- one server -----------------------------------------------------------------------------------

def measure(server: str, slug: str, cookies: list[str], steps: list[int], procs: int, concurrency: int) -> dict:
    from django.db import connections

    from tests.support import WebServer

    web = WebServer(f"bench-connections-{server}-{RUN}", child_env(), server=server).start()
    pid = web.proc.pid
    ctx = mp.get_context("fork")
    reports = ctx.Queue()
    commands = [ctx.Queue() for _ in range(procs)]
    children = []
    rows: list[dict] = []
    try:
        settled(lambda: gauge(web.url) == 0, 10)  # /metrics answers: the app is fully loaded
        baseline = rss_kb(pid)
        connections.close_all()  # the children must not share this process's database connection
        url = f"ws://127.0.0.1:{web.port}/ws/chat/{slug}/"
        for k in range(procs):
            # Each process shifts the cookies so users spread evenly; its own 127.0.0.x source.
            mine = cookies[k:] + cookies[:k]
            child = ctx.Process(target=loadgen, args=(k, url, web.url, mine, f"127.0.0.{k + 2}", concurrency,
                                                      commands[k], reports), daemon=True)
            child.start()
            children.append(child)
        held, rss = 0, baseline
        for step in steps:
            began, server_cpu, collections = time.perf_counter(), process_cpu(pid), full_collections(web.url)
            for k, queue in enumerate(commands):
                queue.put(("open", step // procs + (1 if k < step % procs else 0)))
            results = []
            with Progress(f"connections: {server} opening", total=step, unit="sockets", initial=held) as progress:
                while len(results) < procs:
                    report = reports.get(timeout=STEP_TIMEOUT)
                    if report[0] == "progress":
                        progress.update(report[1])
                    else:
                        results.append(report)
            open_s = time.perf_counter() - began
            previous_held, previous_rss = held, rss
            held = sum(r[2] for r in results)
            settled(lambda held=held: gauge(web.url) == held, 30)  # the server counted (or dropped) them all
            rss, now_gauge, collections_after = rss_kb(pid), gauge(web.url), full_collections(web.url)
            loadgen_cpu = sum(r[3] for r in results)
            row = {"server": server, "step": step, "held": held, "gauge": now_gauge,
                   "failed": sum(sum(r[4].values()) for r in results),
                   "dropped": sum(sum(r[5].values()) for r in results),
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
        after = rss_kb(pid)
        close = {"server": server, "closed": closed, "gauge_zero": zero, "gauge_after": gauge(web.url),
                 "close_s": round(close_s, 1), "baseline_mb": round(baseline / 1024, 1),
                 "peak_mb": round(peak / 1024, 1), "after_close_mb": round(after / 1024, 1),
                 "given_back_mb": round((peak - after) / 1024, 1), "kept_mb": round((after - baseline) / 1024, 1)}
        print("  ".join(f"{c}={close[c]}" for c in CLOSE_COLUMNS), flush=True)
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
        web.stop()
    return {"steps": rows, "close": close, "log": str(web.log_path)}


# --- report ----------------------------------------------------------------------------------------

def print_report(result: dict) -> None:
    rows = [r for server in result["servers"].values() for r in server["steps"]]
    print_table(rows, COLUMNS)
    print()
    print_table([s["close"] for s in result["servers"].values()], CLOSE_COLUMNS)
    print(f"\ntarget: >= {TARGET_SOCKETS} idle sockets per process at <= {TARGET_KB} KB each")
    for server, data in result["servers"].items():
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
    parser.add_argument("--steps", default="1000,5000,10000", help="sockets held after each step (cumulative)")
    parser.add_argument("--users", type=int, default=50, help="users whose sessions the sockets share")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=8, help="handshakes in flight per process")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Every socket is a file on both sides: the server (started after this) inherits the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < steps[-1] + 1000:
        print(f"warning: the hard file limit ({hard}) is close to {steps[-1]} sockets", flush=True)

    env = environment()
    setup_django("chat_bench_connections")
    from django.contrib.auth import get_user_model

    from chat.services.rooms import room_create

    owner = get_user_model().objects.create_user(username=f"connections-{RUN}")
    cookies = [c for _, c in users_with_cookies(args.users, "conn")]
    result = {**env, "settings": {**vars(args), "nofile": [soft, hard]}, "servers": {}}
    for server in args.servers.split(","):
        # A room per server: the presence of one run does not show in the other's.
        room = room_create(owner=owner, name=f"idle {server} {RUN}", private=False)
        print(f"== {server}: one instance, idle sockets to one room in steps {args.steps}, {args.users} users, "
              f"{args.procs} load-generator processes", flush=True)
        result["servers"][server] = measure(server, room.slug, cookies, steps, args.procs, args.concurrency)
    print()
    print_report(result)
    (out / "connections.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "connections.png")
    print(f"\njson: {out / 'connections.json'}\nplot: {out / 'connections.png'}")


if __name__ == "__main__":
    main()
