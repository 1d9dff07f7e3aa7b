"""The sidebar's per-user stream (docs/architecture.md): what keeping the sidebars of a room's
members live costs per message, across two instances. A room's members each hold a home-page
socket (/ws/user/, half on each instance) that gets one `sidebar.activity` frame per message of the
room; the same members then hold room sockets instead and get the `message` frames. For each: the
delivery latency (p50, p99), deliveries lost, and the web instances' CPU per delivery.

    .venv/bin/python -m bench.sidebar [--quick]
"""

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import websockets

from bench.common import (
    RUN,
    Progress,
    child_env,
    environment,
    print_table,
    process_cpu,
    setup_django,
    users_with_cookies,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def reader(url: str, origin: str, cookie: str, kind: str, arrivals: dict, ready: asyncio.Event,
                 counter: list, stop: asyncio.Event) -> None:
    async with websockets.connect(url, origin=origin, additional_headers={"Cookie": f"sessionid={cookie}"},
                                  compression=None, max_size=None, open_timeout=30) as ws:
        while True:  # ready once watching (sidebar.changed) or in the room (hello)
            frame = json.loads(await ws.recv())
            if frame["type"] in ("sidebar.changed", "hello"):
                break
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        while not stop.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            if frame["type"] == kind:
                arrivals.setdefault(frame["seq"], []).append(time.monotonic())


async def measure(web: list, slug: str, sender: str, cookies: list[str], kind: str, rate: int, seconds: float) -> dict:
    arrivals: dict[int, list[float]] = {}
    ready, stop, counter = asyncio.Event(), asyncio.Event(), [0, len(cookies)]
    path = "/ws/user/" if kind == "sidebar.activity" else f"/ws/chat/{slug}/"
    tasks = [asyncio.create_task(reader(f"ws://127.0.0.1:{srv.port}{path}", srv.url, cookie, kind, arrivals, ready,
                                        counter, stop))
             for n, cookie in enumerate(cookies) for srv in (web[n % 2],)]
    await asyncio.wait_for(ready.wait(), 120)
    sent: dict[str, float] = {}
    acked: dict[int, float] = {}
    async with websockets.connect(f"ws://127.0.0.1:{web[0].port}/ws/chat/{slug}/", origin=web[0].url,
                                  additional_headers={"Cookie": f"sessionid={sender}"}, compression=None) as ws:
        await ws.recv()  # hello
        cpu_before = [process_cpu(srv.proc.pid) for srv in web]

        async def acks() -> None:
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "ack":
                    acked[frame["seq"]] = sent[frame["client_id"]]

        listening = asyncio.create_task(acks())
        total = int(rate * seconds)
        with Progress(f"sidebar: {kind}", total=total, unit="messages") as progress:
            start = time.monotonic()
            for n in range(total):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                client_id = uuid.uuid4().hex
                sent[client_id] = time.monotonic()
                await ws.send(json.dumps({"type": "message.send", "body": f"news {n}", "client_id": client_id}))
                progress.update()
        deadline = time.monotonic() + 30
        while (len(acked) < total or sum(len(v) for v in arrivals.values()) < total * len(cookies)) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        cpu = sum(process_cpu(srv.proc.pid) - before for srv, before in zip(web, cpu_before, strict=True))
        listening.cancel()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [(at - acked[seq]) * 1000 for seq, times in arrivals.items() if seq in acked for at in times]
    deliveries = total * len(cookies)
    return {"frames": kind, "sockets": len(cookies), "messages": total, "deliveries": deliveries,
            "lost": deliveries - len(latencies), "p50_ms": round(percentile(latencies, 0.5), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "web_cpu_us_per_delivery": round(cpu / max(1, len(latencies)) * 1e6, 1)}


def scenario(members: int, rate: int, seconds: float) -> list[dict]:
    from django.contrib.auth import get_user_model

    from chat.models import Membership
    from chat.services.rooms import room_create
    from tests.support import WebServer

    web = [WebServer(f"bench-sidebar-{i}-{RUN}", child_env()).start() for i in range(2)]
    try:
        owner = get_user_model().objects.create_user(username=f"sidebar-owner-{RUN}")
        room = room_create(owner=owner, name=f"sidebar {RUN}", private=True)
        users = users_with_cookies(members + 1, "sidebar")
        for username, _ in users:
            Membership.objects.create(room=room, user=get_user_model().objects.get(username=username))
        sender, cookies = users[0][1], [cookie for _, cookie in users[1:]]

        async def rounds() -> list[dict]:
            return [await measure(web, room.slug, sender, cookies, kind, rate, seconds)
                    for kind in ("sidebar.activity", "message", "sidebar.activity", "message")]  # interleaved

        return asyncio.run(rounds())
    finally:
        for srv in web:
            srv.stop()


COLUMNS = ["frames", "sockets", "messages", "deliveries", "lost", "p50_ms", "p99_ms", "web_cpu_us_per_delivery"]


def print_report(saved: dict) -> None:
    print_table(saved["rows"], COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that it runs")
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--rate", type=int, default=20, help="messages/s into the room")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    if args.quick:
        args.members, args.seconds = 40, 4
    setup_django("chat_bench_sidebar")
    rows = scenario(args.members, args.rate, args.seconds)
    print_report({"rows": rows})
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "sidebar.json").write_text(json.dumps({"environment": environment(), "rows": rows}, indent=2))
    print(f"results: {out / 'sidebar.json'}")


if __name__ == "__main__":
    main()
