"""Soak: a steady load over two daphne instances and two workers, then a 100k-record burst.

Every `--every` seconds it prints the RSS of each process, the workers' consumer lag, delivered/s
and p99 send→receive latency of the interval; after the steady part it produces `--burst`
records straight to Kafka and prints the lag until it is back to 0. Memory should stay flat and
the lag should return to 0.

    .venv/bin/python -m bench.soak --minutes 10 --rate 20 --receivers 40
"""

import argparse
import asyncio
import os
import re
import time
import uuid

import httpx
import orjson
import websockets

from bench.common import ENV, PYTHON, RUN, child_env, rss_kb, setup_django, users_with_cookies


async def _drain(ws) -> None:
    async for _ in ws:
        pass


def rss_mb(pid: int) -> float:
    return rss_kb(pid) / 1024


def lag(ports: list[int]) -> int:
    total = 0
    for port in ports:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            continue
        total += sum(float(v) for v in re.findall(r"^chat_worker_lag\{[^}]*\} ([0-9.e+]+)$", text, re.M))
    return int(total)


def p99(values: list[float]) -> float:
    return sorted(values)[int(0.99 * (len(values) - 1))] if values else float("nan")


async def soak(args) -> None:
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # a script: its setup ORM calls may block the loop
    setup_django()
    from django.contrib.auth import get_user_model

    from chat.services.rooms import room_create
    from tests.support import Process, WebServer, free_port

    web = [WebServer(f"soak-web-{i}-{RUN}", child_env()).start() for i in range(2)]
    metric_ports = [free_port(), free_port()]
    workers = [Process(f"soak-worker-{i}-{RUN}", [PYTHON, "manage.py", "consume_messages", "--group",
                                                         f"soak-{RUN}", "--metrics-port", str(port)],
                       child_env()).start() for i, port in enumerate(metric_ports)]
    processes = {f"web-{i + 1}": p.proc.pid for i, p in enumerate(web)}
    processes.update({f"worker-{i + 1}": p.proc.pid for i, p in enumerate(workers)})
    owner = get_user_model().objects.create_user(username=f"soak-{RUN}")
    room = room_create(owner=owner, name=f"soak {RUN}", private=False)
    cookies = [c for _, c in users_with_cookies(args.receivers + 1, "soak")]
    latencies: list[float] = []
    delivered = 0

    async def receiver(server, cookie):
        nonlocal delivered
        url = f"ws://127.0.0.1:{server.port}/ws/chat/{room.slug}/"
        async with websockets.connect(url, origin=server.url, additional_headers={"Cookie": f"sessionid={cookie}"},
                                      compression=None) as ws:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame["type"] == "message":
                    delivered += 1
                    latencies.append((time.time_ns() - int(frame["body"])) / 1e6)

    async def sender(cookie, until: float):
        url = f"ws://127.0.0.1:{web[0].port}/ws/chat/{room.slug}/"
        async with websockets.connect(url, origin=web[0].url, additional_headers={"Cookie": f"sessionid={cookie}"},
                                      compression=None) as ws:
            # Read its socket (acks, its own copies): a client that does not read is cut with 4408.
            draining = asyncio.ensure_future(_drain(ws))
            began, n = time.monotonic(), 0
            while time.monotonic() < until:
                n += 1
                await asyncio.sleep(max(0.0, began + n / args.rate - time.monotonic()))
                await ws.send(orjson.dumps({"type": "message.send", "client_id": uuid.uuid4().hex,
                                            "body": str(time.time_ns())}).decode())
            draining.cancel()

    receivers = [asyncio.ensure_future(receiver(web[i % 2], c)) for i, c in enumerate(cookies[1:])]
    await asyncio.sleep(2)
    start = time.monotonic()
    until = start + args.minutes * 60
    sending = asyncio.ensure_future(sender(cookies[0], until))
    first_rss = {name: rss_mb(pid) for name, pid in processes.items()}
    print("t_s  " + "  ".join(f"{name}_MB" for name in processes) + "  lag  delivered/s  p99_ms", flush=True)
    last_delivered, last_t = 0, start
    while time.monotonic() < until:
        await asyncio.sleep(args.every)
        now = time.monotonic()
        window, latencies[:] = list(latencies), []
        rate = (delivered - last_delivered) / (now - last_t)
        last_delivered, last_t = delivered, now
        rss = "  ".join(f"{rss_mb(pid):9.1f}" for pid in processes.values())
        print(f"{now - start:4.0f}  {rss}  {lag(metric_ports):4d}  {rate:11.0f}  {p99(window):7.1f}", flush=True)
    await sending
    print("steady part done; RSS change (MB): " + ", ".join(
        f"{name} {rss_mb(pid) - first_rss[name]:+.1f}" for name, pid in processes.items()), flush=True)

    # The burst: records straight to Kafka, as if many instances had just produced them.
    from kafka import KafkaProducer

    from chat.bus import records
    producer = KafkaProducer(bootstrap_servers=ENV["KAFKA_BOOTSTRAP_SERVERS"], linger_ms=20,
                             batch_size=512 * 1024)
    base = 10**9
    began = time.monotonic()
    for n in range(args.burst):
        message = {"id": str(uuid.uuid4()), "room": room.slug, "seq": base + n,
                   "author": {"id": owner.id, "username": owner.username}, "body": f"burst {n}",
                   "created_at": "2026-01-01T00:00:00Z", "edited_at": None, "client_id": None}
        record = records.message_record("message.created", message, room_id=room.id)
        producer.send(ENV["KAFKA_TOPIC"], key=records.record_key(record), value=records.encode(record))
    producer.flush(120)
    print(f"burst of {args.burst} produced in {time.monotonic() - began:.1f} s", flush=True)
    while (behind := lag(metric_ports)) > 0 or time.monotonic() - began < 5:
        print(f"  +{time.monotonic() - began:5.1f} s  lag {behind}", flush=True)
        await asyncio.sleep(5)
    print(f"lag back to 0 {time.monotonic() - began:.1f} s after the burst began; RSS now (MB): " + ", ".join(
        f"{name} {rss_mb(pid):.1f}" for name, pid in processes.items()), flush=True)
    for task in receivers:
        task.cancel()
    for process in [*web, *workers]:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20, help="messages/s sent into the room")
    parser.add_argument("--receivers", type=int, default=40)
    parser.add_argument("--every", type=float, default=30, help="seconds between lines")
    parser.add_argument("--burst", type=int, default=100_000)
    asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
