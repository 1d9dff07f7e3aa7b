"""Many-rooms benchmark: many small rooms over two web instances (daphne), on three Redis shards and,
for comparison, on the one Redis, the runs interleaved (shards, single, shards, single, ...). Each
room's members are split over both instances; one member of each room sends, all of them (the
sender included) receive. Senders send at a fixed total rate in steps. Per step it prints delivered
deliveries/s, p50/p99 send->receive latency, messages lost, send->ack p99, and the CPU of each Redis
process (utime + stime from /proc/<pid>/stat), which shows the load spread over the shards; writes
results/rooms.json and results/rooms.png.

    .venv/bin/python -m bench.rooms                     # 200 rooms of 10, two rounds
    .venv/bin/python -m bench.rooms --quick             # a short check (under 2 minutes)
    .venv/bin/python -m bench.rooms --rooms 100 --members 20 --rates 500,1000 --repeat 3
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import time
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
    own_cpu,
    print_table,
    process_cpu,
    setup_django,
    users_with_cookies,
)
from bench.fanout import Arrivals, LeanReceiver, LeanSocket, open_lean, percentile, run_lean

DATABASE = "chat_bench_rooms"
SHARD_PORTS = (6380, 6381, 6382)  # the primaries of `scripts/services.sh up redis-shards` (contract §7)
REPLICA_PORTS = (6390, 6391, 6392)
SINGLE_PORT = 6379  # the one-shard Redis of `scripts/services.sh up`
TOPOLOGIES = {
    "shards": {"REDIS_URLS": " ".join(f"redis://127.0.0.1:{port}/0" for port in SHARD_PORTS), "REDIS_URL": ""},
    "single": {"REDIS_URLS": "", "REDIS_URL": f"redis://127.0.0.1:{SINGLE_PORT}/0"},
}
# The benchmark's own stack: no user is throttled or capped, whatever the defaults become.
LIMITS = {"CHAT_RATE_LIMIT": "1000000/1s", "CHAT_MAX_SOCKETS_PER_USER": "1000000"}
SERVICES_HOME = Path(os.environ.get("CHAT_SERVICES_HOME")
                     or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chat-services")


# --- the Redis processes --------------------------------------------------------------------------

def redis_pid(port: int) -> int | None:
    """The pid of the redis-server listening on `port`: from the services scripts' pid file when it
    names a live redis-server, else from `ss -ltnp`."""
    path = SERVICES_HOME / "redis.pid" if port == SINGLE_PORT else SERVICES_HOME / "redis-shards" / f"redis-{port}.pid"
    if path.exists():
        try:
            pid = int(path.read_text().split()[0])
            if Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server":
                return pid
        except (OSError, ValueError, IndexError):
            pass
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    found = re.search(r'"redis-server",pid=(\d+)', out)
    return int(found.group(1)) if found else None


def redis_pids() -> dict[int, int]:
    """Port -> pid of every Redis data node the scenario reads (primaries, replicas, the single one)."""
    ports = (*SHARD_PORTS, *REPLICA_PORTS, SINGLE_PORT)
    return {port: pid for port in ports if (pid := redis_pid(port)) is not None}


def redis_cpu(pids: dict[int, int]) -> dict[int, float]:
    out = {}
    for port, pid in pids.items():
        try:
            out[port] = process_cpu(pid)
        except OSError:  # gone (a failover moved it, or it stopped)
            out[port] = float("nan")
    return out


def forget_keys(ports: list[int]) -> None:
    """Deletes the run's keys from each Redis (the shards' primaries hold at most 64 MB, with no eviction)."""
    import redis

    from bench.common import ENV

    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            for key in client.scan_iter(match=f"{ENV['CHAT_REDIS_PREFIX']}:*", count=1000):
                client.unlink(key)
        except redis.ConnectionError:
            pass
        finally:
            client.close()


# --- the load generator ---------------------------------------------------------------------------

class RoomSender(LeanSocket):
    """One member of a room that sends: its acks and errors go to `on_reply`, and the room's message
    frames (its own included) are recorded like any member's."""

    def __init__(self, request: bytes, opened: asyncio.Future, arrivals: Arrivals, on_reply) -> None:
        super().__init__(request, opened)
        self.times, self.payloads, self.on_reply = arrivals.times, arrivals.payloads, on_reply

    def on_text(self, now: int, payload: bytes) -> None:
        if payload.startswith(b'{"type":"message"'):
            self.times.append(now)
            self.payloads.append(payload)
        elif payload.startswith((b'{"type":"ack"', b'{"type":"error"')):
            self.on_reply(now, orjson.loads(payload))


async def open_many(protocol, targets: list[tuple[str, str, str]], *args, concurrency: int = 8, ready=None):
    """Opens a socket for each (url, origin, cookie), `concurrency` handshakes at a time, in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str, origin: str, cookie: str):
        async with gate:
            opened = await open_lean(protocol, url, origin, cookie, *args)
        if ready is not None:
            ready.put(1)
        return opened

    return await asyncio.gather(*(one(*target) for target in targets))


def tally(arrivals: Arrivals) -> tuple[dict[int, int], dict[int, list[float]]]:
    """Message frames and send->receive latencies (ms) by step, from the frames' bodies."""
    counts: dict[int, int] = {}
    latencies: dict[int, list[float]] = {}
    for now, payload in zip(arrivals.times, arrivals.payloads, strict=True):
        step, sent_ns, _ = orjson.loads(payload)["body"].split(":", 2)
        step = int(step)
        counts[step] = counts.get(step, 0) + 1
        latencies.setdefault(step, []).append((now - int(sent_ns)) / 1e6)
    return counts, latencies


async def drained(arrivals: Arrivals, limit: float = 60.0) -> None:
    """Until no frame has come for a second (at most `limit` s): frames of a saturated step still on
    their way are late, not lost."""
    by = time.monotonic() + limit
    while arrivals.times and time.time_ns() - arrivals.times[-1] < 1e9 and time.monotonic() < by:
        await asyncio.sleep(0.2)


async def _receive(targets, ready, control, results) -> None:
    arrivals = Arrivals()
    opened = await open_many(LeanReceiver, targets, arrivals, ready=ready)
    start_cpu = own_cpu()
    await asyncio.get_running_loop().run_in_executor(None, control.get)  # "stop"
    await drained(arrivals)
    cpu = own_cpu() - start_cpu
    for transport, _ in opened:
        transport.close()
    counts, latencies = tally(arrivals)
    results.put({"counts": counts, "latencies": latencies, "cpu": cpu})


def receiver_process(targets, ready, control, results) -> None:
    run_lean(_receive(targets, ready, control, results))


def shares(total: int, parts: int) -> list[int]:
    """`total` split over `parts` as evenly as whole numbers go."""
    return [(i + 1) * total // parts - i * total // parts for i in range(parts)]


async def send_steps(targets: list[tuple[str, str, str]], rates: list[int], seconds: float,
                     stack_cpu: StackCpu, pids: dict[int, int], label: str) -> tuple[list[dict], Arrivals]:
    """One sender a room; each step the rooms share `rate` messages/s evenly, each sender at its own
    phase so the messages are spread over the step, not sent in bursts of one a room."""
    arrivals = Arrivals()
    sent_at: dict[str, int] = {}
    acks: dict[int, list[float]] = {}
    errors: dict[int, int] = {}
    current = 0  # the step being sent: an error frame names no client_id to tell its step by

    def on_reply(now: int, frame: dict) -> None:
        if frame["type"] == "ack":
            step = int(frame["client_id"].split("-")[0])
            acks.setdefault(step, []).append((now - sent_at.pop(frame["client_id"])) / 1e6)
        else:
            errors[current] = errors.get(current, 0) + 1

    opened = await open_many(RoomSender, targets, arrivals, on_reply)
    sockets = [sock for _, sock in opened]

    async def send_share(sock: RoomSender, index: int, step: int, count: int, began: float, progress) -> int:
        """Sends `count` messages over the step; returns how many went (a socket the server closed sends no more)."""
        if not count:
            return 0
        interval = seconds / count
        phase = index * interval / len(sockets)
        for n in range(count):
            delay = began + phase + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if sock.transport.is_closing():
                return n
            cid = f"{step}-{index}-{n}"
            sent_at[cid] = time.time_ns()
            sock.send_text(orjson.dumps({"type": "message.send", "client_id": cid,
                                         "body": f"{step}:{sent_at[cid]}:x"}).decode())
            progress.update()
        return count

    steps = []
    try:
        # Each Redis process's CPU with the sockets held and nothing sent (heartbeats, Sentinel's and
        # the replica's pings, its own timers): subtracted from a step's to get the cost per message.
        idle0, idle_began = redis_cpu(pids), time.perf_counter()
        await asyncio.sleep(seconds)
        idle = {port: (cpu - idle0[port]) / (time.perf_counter() - idle_began) for port, cpu in redis_cpu(pids).items()}
        for step, rate in enumerate(rates):
            current = step
            total = max(len(sockets), round(rate * seconds)) if step == 0 else round(rate * seconds)
            counts = shares(total, len(sockets))
            speed_ms = cpu_speed_ms()  # the machine's speed as the step starts (the stack is quiet)
            with Progress(f"rooms: {label} at {rate} msg/s", total=total, unit="messages") as progress:
                redis0, cpu0, machine0, began = redis_cpu(pids), own_cpu(), stack_cpu.sample(), time.perf_counter()
                went = await asyncio.gather(*(send_share(sock, i, step, counts[i], began, progress)
                                              for i, sock in enumerate(sockets)))
                elapsed = time.perf_counter() - began
                cores = StackCpu.cores(machine0, stack_cpu.sample(), elapsed)
                redis1 = redis_cpu(pids)
            await asyncio.sleep(2.0)  # stragglers and acks arrive before the next step
            closed = sum(1 for sock in sockets if sock.transport.is_closing())
            steps.append({"rate": rate, "sent": sum(went), "unsent": total - sum(went), "closed": closed,
                          "send_seconds": elapsed, "sender_cpu": own_cpu() - cpu0,
                          "ack_ms": acks.get(step, []), "errors": errors.get(step, 0), "cores": cores,
                          "redis_cpu_s": {port: redis1[port] - redis0[port] for port in pids},
                          "redis_idle_cores": idle,
                          "speed_ms": speed_ms})
        await drained(arrivals)
    finally:
        for transport, _ in opened:
            transport.close()
    return steps, arrivals


# --- one run: a topology, its stack, every step ---------------------------------------------------

def rooms_per_shard(room_ids: list[int], shards: int) -> list[int]:
    from chat.shards import partition_of, shard_of

    counts = [0] * shards
    for room_id in room_ids:
        counts[shard_of(partition_of(room_id), shards)] += 1
    return counts


def make_rooms(count: int, label: str) -> list:
    """`count` new public rooms. Each run has rooms of its own: a room that handed out seqs before
    starts a new epoch on another Redis (above the clock), which every instance takes as a gap and
    closes the room's sockets to resume, and the load generator's sockets do not reconnect."""
    from django.contrib.auth import get_user_model

    from chat.services.rooms import room_create

    owner, _ = get_user_model().objects.get_or_create(username=f"rooms-owner-{RUN}")
    return [room_create(owner=owner, name=f"rooms {RUN} {label} {n}", private=False) for n in range(count)]


def run(topology: str, rooms: list, cookies: list[str], members: int, rates: list[int], seconds: float,
        round_: int) -> list[dict]:
    """Two daphne instances and a worker on `topology`'s Redis; every room's members connected, half
    on each instance; the steps; then the stack stopped. One report row per step (warm-up left out)."""
    from tests.support import Process, WebServer

    # One consumer group for every run, the web instances' too (a resume waits on it): each
    # worker goes on where the run before it stopped.
    env = child_env(**TOPOLOGIES[topology], **LIMITS, KAFKA_CONSUMER_GROUP=f"bench-rooms-{RUN}")
    label = f"{topology} #{round_}"
    web = [WebServer(f"bench-rooms-{topology}-{i}-{RUN}", env, server="daphne").start() for i in range(2)]
    worker = Process(f"bench-rooms-worker-{RUN}", [PYTHON, "manage.py", "consume_messages"], env).start()
    ctx = mp.get_context("fork")
    ready, results = ctx.Queue(), ctx.Queue()
    procs, controls = [], []
    # Member m of room r is on instance (r + m) % 2: every room has members on both, and every message
    # crosses Redis to both. Member 0 sends, from this process; the others receive, a process per instance.
    by_instance: list[list[tuple[str, str, str]]] = [[], []]
    senders = []
    for r, room in enumerate(rooms):
        for m in range(members):
            srv = web[(r + m) % 2]
            target = (f"ws://127.0.0.1:{srv.port}/ws/chat/{room.slug}/", srv.url, cookies[r * members + m])
            (senders if m == 0 else by_instance[(r + m) % 2]).append(target)
    try:
        for targets in by_instance:
            control = ctx.Queue()
            proc = ctx.Process(target=receiver_process, args=(targets, ready, control, results), daemon=True)
            proc.start()
            procs.append(proc)
            controls.append(control)
        receivers = sum(len(t) for t in by_instance)
        with Progress(f"rooms: {label} opening", total=receivers, unit="sockets") as progress:
            for _ in range(receivers):
                ready.get(timeout=120)
                progress.update()
        pids = redis_pids()
        stack_cpu = StackCpu({"web": [srv.proc.pid for srv in web], "worker": [worker.proc.pid],
                              "receivers": [proc.pid for proc in procs], "senders": [os.getpid()]})
        # Step 0 warms up (each room's first send seeds its epoch from Postgres) and is left out.
        steps, arrivals = run_lean(send_steps(senders, [len(rooms), *rates], seconds, stack_cpu, pids, label))
        for control in controls:
            control.put("stop")
        parts = [results.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
        for srv in web:
            srv.stop()
        worker.stop()
    counts, latencies = tally(arrivals)
    parts.append({"counts": counts, "latencies": latencies})
    shard_ports = SHARD_PORTS if topology == "shards" else (SINGLE_PORT,)
    rows = []
    for step, entry in enumerate(steps):
        if step == 0:
            continue
        lat = [v for part in parts for v in part["latencies"].get(step, [])]
        delivered = sum(part["counts"].get(step, 0) for part in parts)
        expected = entry["sent"] * members
        send_s = max(entry["send_seconds"], 1e-9)
        redis_s = entry["redis_cpu_s"]
        primaries = sum(redis_s.get(port, 0.0) for port in shard_ports)
        row = {
            "topology": topology, "round": round_, "rooms": len(rooms), "members": members,
            "rate_msgs": entry["rate"], "offered_deliveries_per_s": entry["rate"] * members,
            "delivered_per_s": round(delivered / send_s), "expected": expected, "delivered": delivered,
            "lost": expected - delivered, "errors": entry["errors"],
            # Sender sockets the server had closed by the step's end, and the messages they could not send.
            "closed_senders": entry["closed"], "unsent": entry["unsent"],
            "p50_ms": round(percentile(lat, 50), 2), "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat, default=float("nan")), 2),
            "ack_p50_ms": round(percentile(entry["ack_ms"], 50), 2),
            "ack_p99_ms": round(percentile(entry["ack_ms"], 99), 2),
            "sender_behind": round(entry["send_seconds"] - seconds, 2),
            # Each Redis process's share of the step in cores, and the Redis CPU each message cost
            # over the topology's primaries (the single Redis, or the three shards together).
            **{f"redis_{port}": round(redis_s.get(port, float("nan")) / send_s, 3)
               for port in (*SHARD_PORTS, SINGLE_PORT)},
            "redis_replicas": round(sum(redis_s.get(port, 0.0) for port in REPLICA_PORTS) / send_s, 3),
            "redis_us_per_msg": round(1e6 * primaries / max(entry["sent"], 1), 1),
            # The same less what the primaries use idle: the cost of a message alone.
            "redis_net_us_per_msg": round(1e6 * (primaries - send_s * sum(entry["redis_idle_cores"].get(port, 0.0)
                                                                          for port in shard_ports))
                                          / max(entry["sent"], 1), 1),
            "redis_idle": round(sum(entry["redis_idle_cores"].get(port, 0.0) for port in shard_ports), 3),
            "speed_ms": entry["speed_ms"],
            **{f"cores_{part}": value for part, value in entry["cores"].items()},
            "cores_total": round(sum(v for k, v in entry["cores"].items() if k not in ("machine", "steal")), 2),
        }
        rows.append(row)
    return rows


# --- report ---------------------------------------------------------------------------------------

def summarize(rows: list[dict]) -> list[dict]:
    """Per topology and rate, the median over rounds (and the worst loss). A run in which the server
    closed sender sockets (a new epoch on its Redis, e.g. after a FLUSHALL by someone else on a shared
    one; the load generator does not reconnect) is left out: its steps measure a broken run."""
    broken = {(r["topology"], r["round"]) for r in rows if r.get("closed_senders")}
    rows = [r for r in rows if (r["topology"], r["round"]) not in broken]
    out = []
    for topology, rate in sorted({(r["topology"], r["rate_msgs"]) for r in rows}, key=lambda k: (k[1], k[0])):
        mine = [r for r in rows if (r["topology"], r["rate_msgs"]) == (topology, rate)]

        def med(column: str, mine: list[dict] = mine) -> float:
            return round(statistics.median(r[column] for r in mine), 3)

        ports = SHARD_PORTS if topology == "shards" else (SINGLE_PORT,)
        out.append({"topology": topology, "rate_msgs": rate, "rounds": len(mine),
                    "offered_deliveries_per_s": mine[0]["offered_deliveries_per_s"],
                    "delivered_per_s": round(med("delivered_per_s")), "lost": max(r["lost"] for r in mine),
                    "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "ack_p99_ms": med("ack_p99_ms"),
                    **{f"redis_{port}": med(f"redis_{port}") for port in ports},
                    "redis_us_per_msg": med("redis_us_per_msg"), "redis_net_us_per_msg": med("redis_net_us_per_msg"),
                    "cores_web": med("cores_web"), "speed_ms": med("speed_ms"),
                    "cores_machine": med("cores_machine")})
    return out


def print_report(result: dict) -> None:
    rows = result["rows"]
    print(f"{result['settings']['rooms']} rooms of {result['settings']['members']} over two daphne instances; "
          f"rooms per shard by round {result['rooms_per_shard']}; Redis columns are cores (1.0 = one core busy)")
    print_table(rows, ["topology", "round", "rate_msgs", "offered_deliveries_per_s", "delivered_per_s", "lost",
                       "errors", "closed_senders", "unsent", "p50_ms", "p99_ms", "max_ms", "ack_p99_ms",
                       "sender_behind", "speed_ms"])
    print()
    print_table(rows, ["topology", "round", "rate_msgs", *(f"redis_{p}" for p in (*SHARD_PORTS, SINGLE_PORT)),
                       "redis_replicas", "redis_idle", "redis_us_per_msg", "redis_net_us_per_msg", "cores_web",
                       "cores_worker", "cores_receivers", "cores_senders", "cores_machine", "cores_steal"])
    print("\nMedian over rounds")
    for failure in result.get("failed", []):
        print(f"round {failure['round']}, {failure['topology']}: FAILED: {failure['error']}")
    print_table(result["summary"], ["topology", "rate_msgs", "rounds", "offered_deliveries_per_s", "delivered_per_s",
                                    "lost", "p50_ms", "p99_ms", "ack_p99_ms",
                                    *(f"redis_{p}" for p in (*SHARD_PORTS, SINGLE_PORT)), "redis_us_per_msg",
                                    "redis_net_us_per_msg", "cores_web", "cores_machine", "speed_ms"])


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = result["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for topology, colour in (("shards", "tab:blue"), ("single", "tab:orange")):
        mine = [r for r in summary if r["topology"] == topology]
        x = [r["offered_deliveries_per_s"] for r in mine]
        left.plot(x, [r["p50_ms"] for r in mine], marker="o", color=colour, label=f"{topology}, p50")
        left.plot(x, [r["p99_ms"] for r in mine], marker="s", linestyle="--", color=colour, label=f"{topology}, p99")
    left.set_xlabel("offered deliveries/s")
    left.set_ylabel("send→receive latency (ms)")
    left.set_yscale("log")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    left.set_title(f"{result['settings']['rooms']} rooms of {result['settings']['members']}, two instances")
    shards = [r for r in summary if r["topology"] == "shards"]
    single = [r for r in summary if r["topology"] == "single"]
    for port, marker, colour in zip(SHARD_PORTS, "o^v", ("tab:blue", "tab:cyan", "tab:purple"), strict=True):
        right.plot([r["rate_msgs"] for r in shards], [r[f"redis_{port}"] for r in shards], marker=marker,
                   color=colour, label=f"shard on {port}")
    right.plot([r["rate_msgs"] for r in shards], [sum(r[f"redis_{p}"] for p in SHARD_PORTS) for r in shards],
               linestyle=":", color="tab:blue", label="three shards together")
    right.plot([r["rate_msgs"] for r in single], [r[f"redis_{SINGLE_PORT}"] for r in single], marker="s",
               linewidth=2.5, color="tab:orange", label=f"single Redis ({SINGLE_PORT})")
    right.set_xlabel("messages/s (all rooms)")
    right.set_ylabel("Redis CPU (cores)")
    right.grid(True, alpha=0.3)
    right.legend()
    right.set_title("CPU of each Redis process")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--members", type=int, default=10, help="sockets per room, one of them the sender")
    parser.add_argument("--rates", default="250,500,1000,2000", help="messages/s per step, over all rooms")
    parser.add_argument("--seconds", type=float, default=6.0, help="per step")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (shards, single)")
    parser.add_argument("--topologies", default="shards,single", help="which, in each round's order")
    parser.add_argument("--quick", action="store_true", help="60 rooms, two 3 s steps, one round")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    if args.quick:
        args.rooms, args.rates, args.seconds, args.repeat = 60, "300,1200", 3.0, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    topologies = [t for t in args.topologies.split(",") if t]
    if "shards" in topologies:
        subprocess.run([ROOT / "scripts" / "services.sh", "up", "redis-shards"], check=True, stdout=subprocess.DEVNULL)
    env = environment()
    setup_django(DATABASE)
    print(f"== {args.rooms} rooms of {args.members}: {args.rooms * args.members} users with sessions", flush=True)
    cookies = [c for _, c in users_with_cookies(args.rooms * args.members, "rooms")]
    rates = [int(r) for r in args.rates.split(",")]
    rows, spread, failed = [], {}, []
    try:
        for round_ in range(1, args.repeat + 1):
            for topology in topologies:
                print(f"== round {round_}: {topology}, rates {args.rates} msg/s", flush=True)
                rooms = make_rooms(args.rooms, f"{topology}-{round_}")
                if topology == "shards":
                    spread[round_] = rooms_per_shard([room.id for room in rooms], len(SHARD_PORTS))
                try:
                    rows += run(topology, rooms, cookies, args.members, rates, args.seconds, round_)
                except Exception as exc:  # the other runs' figures stand; the failure is reported with them
                    print(f"== round {round_}: {topology} FAILED: {exc!r}", flush=True)
                    failed.append({"topology": topology, "round": round_, "error": repr(exc)})
    finally:
        forget_keys([*SHARD_PORTS, SINGLE_PORT])
    result = {**env, "settings": vars(args), "rooms_per_shard": spread, "rows": rows, "failed": failed,
              "summary": summarize(rows)}
    print()
    print_report(result)
    (out / "rooms.json").write_text(json.dumps(result, indent=2))
    if plot(result, out / "rooms.png"):
        print(f"\nplot: {out / 'rooms.png'}")
    print(f"json: {out / 'rooms.json'}")


if __name__ == "__main__":
    main()
