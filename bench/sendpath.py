"""Send-path micro-benchmark: what the shard identity check costs each send. The room's send script
(chat/roomscripts.py) first calls `INFO replication` to read the shard's master_replid and compares
it and the deployment with the shard's identity key. This runs the room's send step as the app
does (`RedisRoomState.send`, one room, a new client_id each call, sequentially) with the script as
built and with a copy whose `INFO replication` is replaced by the same replid line as a constant
(everything else equal), alternating the two in rounds, straight against a Redis (no web
instance), with two subscribers draining the room's channel as two instances would. Per variant:
the Redis process's CPU per send (utime + stime from /proc), the script's own time per call (INFO
commandstats), and the send's latency p50/p99 as the app sees it; and `INFO replication` alone in
a script. Writes results/sendpath.json.

    .venv/bin/python -m bench.sendpath                 # shard0's primary (6380, with a replica) and 6379
    .venv/bin/python -m bench.sendpath --ports 6379 --calls 20000 --rounds 3
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path

import redis

from bench.common import ENV, ROOT, RUN, cpu_speed_ms, environment, print_table, process_cpu
from bench.rooms import SHARD_PORTS, SINGLE_PORT, redis_pid

INFO_CALL = "redis.call('INFO', 'replication')"
INFO_ALONE = f"return #{INFO_CALL}"
DEPLOYMENT = f"bench-sendpath-{RUN}"
PREFIX = f"bench-sendpath-{RUN}"
ROOM_ID, USER_ID = 1, 7
VARIANTS = ("as built", "without INFO", "INFO alone")


class Drain(threading.Thread):
    """A subscriber to `channel` that reads and drops what it gets, as an instance's hub reads it."""

    def __init__(self, port: int, channel: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"SUBSCRIBE {channel}\r\n".encode())
        self.sock.recv(4096)  # the subscription's confirmation

    def run(self) -> None:
        try:
            while self.sock.recv(1 << 20):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def message(n: int) -> dict:
    """A message of a usual size, as chat.services.sending builds it."""
    return {"id": str(uuid.uuid4()), "room": "bench-sendpath", "author": {"id": USER_ID, "username": "bench-user"},
            "body": "x" * 80, "created_at": "2026-11-30T23:00:00.000000+00:00", "edited_at": None,
            "client_id": f"c-{n}"}


async def measure(port: int, calls: int, rounds: int) -> list[dict]:
    from chat.roomscripts import SEND_SCRIPT
    from chat.roomstate import RedisRoomState

    if SEND_SCRIPT.count(INFO_CALL) != 1:
        raise SystemExit("the send script no longer reads INFO replication once: this benchmark measures nothing")
    client = redis.Redis(host="127.0.0.1", port=port)
    pid = redis_pid(port)
    state = RedisRoomState([{"url": f"redis://127.0.0.1:{port}/0"}], PREFIX, f"{PREFIX}-layer")
    state._deployment = (DEPLOYMENT, time.monotonic() + 1e9)  # no Postgres: the identity is this run's
    shard = state.shards[0]
    replid = client.info("replication")["master_replid"]
    scripts = {"as built": shard.send,
               "without INFO": shard.redis.register_script(SEND_SCRIPT.replace(INFO_CALL, f"'master_replid:{replid}'"))}
    info_alone = client.register_script(INFO_ALONE)
    drains = [Drain(port, state.room_channel(ROOM_ID)) for _ in range(2)]
    for drain in drains:
        drain.start()
    counter = iter(range(10**9))

    async def send(seed: int | None = None) -> None:
        n = next(counter)
        outcome = await state.send(room_id=ROOM_ID, user_id=USER_ID, client_id=f"c-{n}", message=message(n), seed=seed)
        if outcome.status != "ok":
            raise RuntimeError(f"send: {outcome}")

    samples: dict[str, dict[str, list[float]]] = {}
    try:
        await send(seed=1000)  # the identity, the room's first epoch
        for variant in ("as built", "without INFO"):  # a full recent buffer, as a busy room has
            shard.send = scripts[variant]
            for _ in range(1500):
                await send()
        for _ in range(rounds):
            for variant in VARIANTS:
                if variant in scripts:
                    shard.send = scripts[variant]
                stats0 = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
                cpu0, began = process_cpu(pid) if pid else 0.0, time.perf_counter()
                latencies = []
                for _ in range(calls):
                    t0 = time.perf_counter_ns()
                    if variant == "INFO alone":
                        info_alone()
                    else:
                        await send()
                    latencies.append((time.perf_counter_ns() - t0) / 1000)
                elapsed = time.perf_counter() - began
                cpu = (process_cpu(pid) - cpu0) if pid else float("nan")
                stats1 = client.info("commandstats")["cmdstat_evalsha"]
                mine = samples.setdefault(variant, {"redis_cpu_us": [], "script_us": [], "p50_us": [], "p99_us": [],
                                                    "calls_per_s": []})
                mine["redis_cpu_us"].append(1e6 * cpu / calls)
                mine["script_us"].append((stats1["usec"] - stats0["usec"]) / max(1, stats1["calls"] - stats0["calls"]))
                mine["p50_us"].append(percentile(latencies, 50))
                mine["p99_us"].append(percentile(latencies, 99))
                mine["calls_per_s"].append(calls / elapsed)
    finally:
        for drain in drains:
            drain.close()
        for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
            client.unlink(key)
    role = client.info("replication")
    rows = []
    for variant, values in samples.items():
        rows.append({"port": port, "role": f"{role['role']} ({role.get('connected_slaves', 0)} replicas)",
                     "variant": variant, "rounds": rounds, "calls": calls,
                     **{name: round(statistics.median(v), 2) for name, v in values.items()},
                     "redis_cpu_us_range": [round(min(values["redis_cpu_us"]), 2),
                                            round(max(values["redis_cpu_us"]), 2)]})
    return rows


def print_report(result: dict) -> None:
    print(f"{result['settings']['calls']} sends a variant a round, median of {result['settings']['rounds']} rounds; "
          "redis_cpu_us: the Redis process's CPU per call; script_us: the script's own time (INFO commandstats); "
          "p50/p99: the send step's latency in the app")
    print_table(result["rows"], ["port", "role", "variant", "redis_cpu_us", "script_us", "p50_us", "p99_us",
                                 "calls_per_s"])
    for port, cost in result["info_cost"].items():
        print(f"{port}: INFO replication costs {cost['redis_cpu_us']} us of Redis CPU a send "
              f"({cost['share_pct']} % of the send's), {cost['script_us']} us of script time, "
              f"{cost['p50_us']} us of send latency at p50")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", default=f"{SHARD_PORTS[0]},{SINGLE_PORT}")
    parser.add_argument("--calls", type=int, default=10000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2000 calls, 3 rounds")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds = 2000, 3
    ports = [int(p) for p in args.ports.split(",")]
    if any(p in SHARD_PORTS for p in ports):
        subprocess.run([ROOT / "scripts" / "services.sh", "up", "redis-shards"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([ROOT / "scripts" / "services.sh", "up", "redis"], check=True, stdout=subprocess.DEVNULL)
    # The app's settings (the send step reads its buffer size and windows there); no database is used.
    os.environ.update({**ENV, "REDIS_URL": f"redis://127.0.0.1:{SINGLE_PORT}/0"})
    import django

    django.setup()
    env = environment()
    speed_ms = cpu_speed_ms()
    rows = [row for port in ports for row in asyncio.run(measure(port, args.calls, args.rounds))]
    info_cost = {}
    for port in ports:
        mine = {r["variant"]: r for r in rows if r["port"] == port}
        built, without = mine["as built"], mine["without INFO"]
        delta = round(built["redis_cpu_us"] - without["redis_cpu_us"], 2)
        info_cost[port] = {"redis_cpu_us": delta, "share_pct": round(100 * delta / built["redis_cpu_us"], 1),
                           "script_us": round(built["script_us"] - without["script_us"], 2),
                           "p50_us": round(built["p50_us"] - without["p50_us"], 2)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {**env, "settings": vars(args), "speed_ms": speed_ms, "rows": rows, "info_cost": info_cost}
    print_report(result)
    (out / "sendpath.json").write_text(json.dumps(result, indent=2))
    print(f"json: {out / 'sendpath.json'}")


if __name__ == "__main__":
    main()
