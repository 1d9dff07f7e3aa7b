"""Send-path micro-benchmark: what the shard identity check costs each send. The room's send script
(chat/roomscripts.py) first calls `INFO replication` to read the shard's master_replid and
compares it and the deployment with the shard's identity key. This runs the script as built and a
copy whose `INFO replication` is replaced by the same line passed in as an argument (everything
else equal), alternating the two in rounds, straight against a Redis (no web instance), with two
subscribers draining the room's channel as two instances would. Per variant: the Redis CPU per call
(the process's utime + stime from /proc), the script's own time per call (INFO commandstats), and
the client's round-trip p50/p99; and `INFO replication` alone in a script. Writes
results/sendpath.json.

    .venv/bin/python -m bench.sendpath                 # shard0's primary (6380, with a replica) and 6379
    .venv/bin/python -m bench.sendpath --ports 6379 --calls 20000 --rounds 3
"""

import argparse
import json
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import redis

from bench.common import ROOT, RUN, cpu_speed_ms, environment, print_table, process_cpu
from bench.rooms import SHARD_PORTS, SINGLE_PORT, redis_pid
from chat.roomscripts import IDENTITY_SCRIPT, SEND_SCRIPT

INFO_CALL = "redis.call('INFO', 'replication')"
# The same script with the replid line passed in as ARGV[9] instead of read with INFO each call.
WITHOUT_INFO = SEND_SCRIPT.replace(INFO_CALL, "ARGV[9]")
assert SEND_SCRIPT.count(INFO_CALL) == 1, "the send script no longer reads INFO once: this benchmark measures nothing"
INFO_ALONE = f"return #{INFO_CALL}"
DEPLOYMENT = f"bench-sendpath-{RUN}"
PREFIX = f"bench-sendpath-{RUN}"
# A message frame of a usual size around its seq, as chat.roomstate.split_message_frame makes it.
HEAD = ('{"type":"message","id":"0193a8f2-7c1e-7d3a-9b2e-5f1c2d3e4f50","room":"bench-sendpath","seq":')
TAIL = (',"author":{"id":1234,"username":"bench-user"},"body":"' + "x" * 80
        + '","created_at":"2026-11-30T23:00:00.000000+00:00","edited_at":null,"client_id":"c-1"}')


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


def measure(port: int, calls: int, rounds: int) -> list[dict]:
    client = redis.Redis(host="127.0.0.1", port=port)
    pid = redis_pid(port)
    identity_key = f"{PREFIX}:{{p1}}:shard:identity"
    room = f"{PREFIX}:{{p1}}:room:1"
    channel = f"{PREFIX}__group__room.{{p1}}.1"
    replid_line = "master_replid:" + client.info("replication")["master_replid"]
    client.register_script(IDENTITY_SCRIPT)(keys=[identity_key], args=[DEPLOYMENT, "gen-1"])
    scripts = {"as built": client.register_script(SEND_SCRIPT), "without INFO": client.register_script(WITHOUT_INFO)}
    info_alone = client.register_script(INFO_ALONE)
    drains = [Drain(port, channel) for _ in range(2)]
    for drain in drains:
        drain.start()
    sequence = iter(range(10**9))

    def send(variant: str, seed: str = "") -> list:
        n = next(sequence)
        return scripts[variant](keys=[f"{room}:meta", f"{room}:cid:7:c{n}", f"{room}:recent", channel, f"{room}:ids",
                                      identity_key],
                                args=[HEAD, TAIL, f"id-{n}", 120, seed, 1000, 1, DEPLOYMENT, replid_line])

    assert send("as built", seed="1000")[0] == b"ok"
    for _ in range(2000):  # a full recent buffer, as a busy room has, and warm caches
        send("as built")
        send("without INFO")
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(rounds):
            for variant in (*scripts, "INFO alone"):
                stats0 = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
                cpu0, began = process_cpu(pid) if pid else 0.0, time.perf_counter()
                latencies = []
                for _ in range(calls):
                    t0 = time.perf_counter_ns()
                    if variant == "INFO alone":
                        info_alone()
                    else:
                        send(variant)
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
        for key in client.scan_iter(match=f"{PREFIX}:*", count=1000):
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
    print(f"{result['settings']['calls']} calls a variant a round, median of {result['settings']['rounds']} rounds; "
          "redis_cpu_us: the Redis process's CPU per call; script_us: the script's own time (INFO commandstats)")
    print_table(result["rows"], ["port", "role", "variant", "redis_cpu_us", "script_us", "p50_us", "p99_us",
                                 "calls_per_s"])
    for port, cost in result["info_cost"].items():
        print(f"{port}: INFO replication costs {cost['redis_cpu_us']} us of Redis CPU a send "
              f"({cost['share_pct']} % of the send script's), {cost['p50_us']} us of round trip at p50")


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
    env = environment()
    speed_ms = cpu_speed_ms()
    rows = [row for port in ports for row in measure(port, args.calls, args.rounds)]
    info_cost = {}
    for port in ports:
        built, without = ({r["variant"]: r for r in rows if r["port"] == port}[v] for v in ("as built", "without INFO"))
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
