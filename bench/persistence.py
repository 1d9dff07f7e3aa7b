"""Persistence: how fast workers move records from Kafka to Postgres, and how long a burst takes.

Per scenario (one worker, then two in the same group) it produces a burst of `message.created`
records straight to a fresh 8-partition topic, exactly as the web instances do (key = room, value =
chat.bus.records), for rooms spread evenly over the partitions; then starts the worker(s)
(`manage.py consume_messages`) and counts the stored rows in Postgres over time. It prints the
producing rate, records/s from the first stored row to the last, and the drain time (from the
workers' start until every record is stored, i.e. the lag is back to 0). Writes
results/persistence.{json,png}. Target: >= 50k records/s by one worker.

    .venv/bin/python -m bench.persistence --records 100000 --workers 1,2
"""

import argparse
import contextlib
import json
import re
import time
import uuid
from pathlib import Path

from uuid6 import uuid7

from bench.common import (
    ENV,
    PYTHON,
    ROOT,
    RUN,
    Progress,
    StackCpu,
    child_env,
    cpu_speed_ms,
    environment,
    print_table,
    rss_kb,
    setup_django,
)

TARGET_RATE = 50_000
PARTITIONS = 8
COLUMNS = ["workers", "records", "produce_s", "produced_per_s", "first_row_s", "store_s", "stored_per_s",
           "drain_s", "per_worker", "active", "dead", "worker_cpu_pct", "rows_per_cpu_s", "peak_worker_mb",
           "cores_postgres", "cores_kafka", "cores_machine", "speed_ms", "steal_cores"]


def balanced_rooms(owner, per_partition: int, label: str) -> list:
    """Rooms whose keys land evenly on the partitions, so two workers get equal shares."""
    from kafka.partitioner.default import murmur2

    from chat.bus import records
    from chat.services.rooms import room_create

    rooms: dict[int, list] = {p: [] for p in range(PARTITIONS)}
    while any(len(found) < per_partition for found in rooms.values()):
        room = room_create(owner=owner, name=f"persist {label} {uuid.uuid4().hex[:8]}", private=False)
        # The producer's default partitioner: murmur2 of the key.
        partition = (murmur2(records.record_key({"room_id": room.id})) & 0x7FFFFFFF) % PARTITIONS
        if len(rooms[partition]) < per_partition:
            rooms[partition].append(room)
    return [room for found in rooms.values() for room in found]


def build_records(rooms: list, author, count: int) -> list[tuple[bytes, bytes]]:
    """Valid message.created records as (key, value), seqs 1.. per room (as in tests/integration)."""
    from django.utils import timezone

    from chat.bus import records

    out = []
    for n in range(count):
        room = rooms[n % len(rooms)]
        message = {"id": str(uuid7()), "room": room.slug, "seq": n // len(rooms) + 1,
                   "author": {"id": author.id, "username": author.username},
                   "body": f"persistence benchmark message number {n}, a line of ordinary length",
                   "created_at": timezone.now().isoformat(), "edited_at": None, "client_id": None}
        record = records.message_record("message.created", message, room_id=room.id)
        out.append((records.record_key(record), records.encode(record)))
    return out


def produce(topic: str, values: list[tuple[bytes, bytes]]) -> float:
    """Seconds to produce every record and have the broker acknowledge it."""
    from kafka import KafkaProducer

    # Batching as a busy web instance would (soak does the same); acks from the leader.
    producer = KafkaProducer(bootstrap_servers=ENV["KAFKA_BOOTSTRAP_SERVERS"], linger_ms=20,
                             batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    producer.partitions_for(topic)  # metadata first: not part of the producing time
    began = time.perf_counter()
    with Progress("persistence: producing", total=len(values), unit="records") as progress:
        for key, value in progress.iterate(values):
            producer.send(topic, key=key, value=value)
    producer.flush(300)
    seconds = time.perf_counter() - began
    producer.close()
    return seconds


def scenario(workers: int, count: int, owner, per_partition: int, timeout: float, idle_exit: float,
             writers: int | None = None) -> dict:
    from django.db import connection
    from django.db.models import OuterRef, Subquery

    from chat.bus.topics import ensure_topics
    from chat.models import Message, Room
    from tests.support import Process

    topic = f"{ENV['KAFKA_TOPIC']}.persist-{workers}w"
    ensure_topics(topic=topic, partitions=PARTITIONS)
    rooms = balanced_rooms(owner, per_partition, f"{workers}w")
    room_ids = [room.id for room in rooms]
    values = build_records(rooms, owner, count)
    produce_s = produce(topic, values)
    print(f"  produced {count} records in {produce_s:.1f} s ({count / produce_s:.0f}/s)", flush=True)

    def stored() -> int:
        """Rows stored: each room's seqs run 1.. and a room's records are written in order, so its
        highest stored seq is its row count; read off the (room, seq) index, this costs Postgres
        next to nothing while the workers write (a count(*) every sample took a good part of a core
        away from them). The exact count checks it at the end."""
        newest = Message.objects.filter(room_id=OuterRef("id")).order_by("-seq").values("seq")[:1]
        return sum(top or 0 for top in Room.objects.filter(id__in=room_ids).values_list(Subquery(newest), flat=True))

    speed_ms = cpu_speed_ms()  # the machine's speed before the workers start
    group = f"bench-persist-{workers}w-{RUN}"
    if workers > 1:
        # --idle-exit counts the wait for a rebalance as idle: a member joining while the other is
        # mid-batch waits longer than 3 s and would exit with nothing read (the first takes all).
        idle_exit = max(idle_exit, 15)
    began = time.perf_counter()
    procs = [Process(f"bench-persist-{workers}w-{i}-{RUN}",
                     [PYTHON, "manage.py", "consume_messages", "--topic", topic, "--group", group,
                      "--idle-exit", str(idle_exit), "--progress-every", "1",
                      *(["--writers", str(writers)] if writers else [])], child_env()).start()
             for i in range(workers)]
    series: list[tuple[float, int]] = []  # (seconds since the workers started, rows stored)
    stack_cpu = StackCpu({"workers": [p.proc.pid for p in procs]})
    used: list[dict[str, float]] = []  # CPU seconds of each part (workers, Postgres, Kafka, machine) at each sample
    peak_rss = 0
    with Progress(f"persistence: {workers} worker(s) storing", total=count, unit="records") as progress:
        rows = 0
        while rows < count and time.perf_counter() - began < timeout and any(p.alive() for p in procs):
            rows = stored()
            series.append((round(time.perf_counter() - began, 3), rows))
            used.append(stack_cpu.sample())
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a worker has just exited
                peak_rss = max(peak_rss, *(rss_kb(p.proc.pid) for p in procs))
            progress.update_to(rows)
            time.sleep(0.1)  # the sampling period of the rows-over-time curve
    drain_s = time.perf_counter() - began
    exact = Message.objects.filter(room_id__in=room_ids).count()
    if rows >= count and exact != rows:
        raise SystemExit(f"{exact} rows stored, but the rooms' highest seqs add up to {rows}: "
                         "a room's records stored out of order?")
    # The workers stop on their own once idle (--idle-exit): their last line says what they did.
    for proc in procs:
        if proc.proc.wait(timeout) != 0:
            raise SystemExit(f"{proc.name} failed:\n{proc.log()[-3000:]}")
    connection.close()
    finals = [re.search(r"stopped after (\d+) records \((\d+) new, (\d+) dead\)", p.log()) for p in procs]
    if rows < count or not all(finals):
        raise SystemExit(f"only {rows} of {count} rows stored; logs in " + ", ".join(str(p.log_path) for p in procs))
    # From the first sample that saw rows to the last: rows stored between two observed moments (rows
    # arrive a committed batch at a time, so this counts the batches after the first over their time).
    first = next(i for i, (_, n) in enumerate(series) if n > 0)
    (t0, n0), (t1, n1) = series[first], series[-1]
    cores = StackCpu.cores(used[first], used[-1], max(t1 - t0, 1e-9))
    worker_cpu = cores["workers"] * (t1 - t0)
    return {
        "workers": workers, "records": count, "topic": topic, "rooms": len(rooms),
        "produce_s": round(produce_s, 1), "produced_per_s": round(count / produce_s),
        "first_row_s": round(t0, 1), "store_s": round(t1 - t0, 1),
        "stored_per_s": round((n1 - n0) / max(t1 - t0, 1e-9)),
        "drain_s": round(drain_s, 1),
        "per_worker": "/".join(f[1] for f in finals), "active": sum(int(f[1]) > 0 for f in finals),
        "idle_exit": idle_exit, "new": sum(int(f[2]) for f in finals),
        "dead": sum(int(f[3]) for f in finals), "peak_worker_mb": round(peak_rss / 1024, 1),
        # CPU the workers got while storing (100% = one core each) and rows per CPU-second of
        # theirs: what one worker would do with a core of its own (Postgres aside).
        "worker_cpu_pct": round(100 * cores["workers"] / workers),
        "rows_per_cpu_s": round((n1 - n0) / max(worker_cpu, 1e-9)),
        # Where the machine's cores went while storing: Postgres's share is the rows' cost there.
        "cores_postgres": cores["postgres"], "cores_kafka": cores["kafka"], "cores_machine": cores["machine"],
        "speed_ms": speed_ms,
        # Cores the hypervisor gave other guests while storing: much of it, and the rate is low.
        "steal_cores": cores["steal"],
        "series": series, "logs": [str(p.log_path) for p in procs],
    }


def print_report(result: dict) -> None:
    print_table(result["scenarios"], COLUMNS)
    print("\nfirst_row_s: workers' start (group join, first fetch) to the first stored row; stored_per_s: "
          "from the first row to the last; drain_s: workers' start to all rows stored (lag 0)")
    one = next((s for s in result["scenarios"] if s["workers"] == 1), None)
    if one:
        print(f"target: >= {TARGET_RATE} records/s by one worker -> {one['stored_per_s']}/s, "
              f"{'meets' if one['stored_per_s'] >= TARGET_RATE else 'misses'} the target")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for s in result["scenarios"]:
        ax.plot([t for t, _ in s["series"]], [n for _, n in s["series"]],
                drawstyle="steps-post", label=f"{s['workers']} worker(s): {s['stored_per_s']}/s")
    ax.set_xlabel("seconds since the workers started")
    ax.set_ylabel("rows stored")
    ax.set_title(f"Kafka → Postgres: a burst of {result['scenarios'][0]['records']} records")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records in each burst")
    parser.add_argument("--workers", default="1,2", help="workers in each scenario (one group each)")
    parser.add_argument("--rooms-per-partition", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600, help="seconds a scenario may take to drain")
    parser.add_argument("--idle-exit", type=float, default=3, help="the workers' --idle-exit (15 s at least with 2+)")
    parser.add_argument("--writers", type=int, default=None, help="the workers' --writers (default: theirs)")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    setup_django("chat_bench_persistence")
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user(username=f"persistence-{RUN}")
    result = {**env, "settings": vars(args), "scenarios": []}
    for workers in (int(w) for w in args.workers.split(",")):
        print(f"== {workers} worker(s): a burst of {args.records} records over {PARTITIONS} partitions", flush=True)
        found = scenario(workers, args.records, owner, args.rooms_per_partition, args.timeout, args.idle_exit,
                         args.writers)
        print("  " + "  ".join(f"{c}={found[c]}" for c in COLUMNS), flush=True)
        result["scenarios"].append(found)
    print()
    print_report(result)
    (out / "persistence.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "persistence.png")
    print(f"\njson: {out / 'persistence.json'}\nplot: {out / 'persistence.png'}")


if __name__ == "__main__":
    main()
