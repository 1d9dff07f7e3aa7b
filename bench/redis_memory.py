"""Redis memory per room and per message (docs/scaling.md, "Redis memory"): what one room's keys
take while it is active (a full recent buffer), once it has gone quiet (CHAT_ROOM_IDLE_SECONDS),
and what the idempotency window holds per message, read with MEMORY USAGE from the real Redis
after sends through the app's own send script. From these: the Redis a deployment needs for N
active rooms, Q quiet ones and M messages/s of steady traffic.

    .venv/bin/python -m bench.redis_memory [--quick]
"""

import argparse
import asyncio
import json
import secrets
import uuid
from pathlib import Path

from bench.common import ROOT, Progress, environment, print_table, setup_django

IDLE_SECONDS = 2  # the scenario's own idle limit, so a room goes quiet within the run


async def room_bytes(room_id: int) -> dict[str, int]:
    """MEMORY USAGE of each kind of the room's keys (meta, recent, ids, cid, cidx, ...)."""
    from chat.roomstate import room_state

    shard, base = room_state()._room(room_id)
    sizes: dict[str, int] = {}
    async for key in shard.redis.scan_iter(match=f"{base}:*", count=1000):
        kind = key.decode()[len(base) + 1:].split(":")[0]
        sizes[kind] = sizes.get(kind, 0) + (await shard.redis.memory_usage(key, samples=0) or 0)
    return sizes


async def fill(room_id: int, count: int, body_size: int, progress: Progress | None = None) -> None:
    from django.utils import timezone

    from chat import protocol
    from chat.roomstate import room_state

    state = room_state()
    for n in range(count):
        message = protocol.message_object(id=str(uuid.uuid4()), room=f"bench-{room_id}", seq=0, author_id=1,
                                          author_username="bench", body=secrets.token_urlsafe(body_size)[:body_size],
                                          created_at=timezone.now(), edited_at=None, client_id=None)
        outcome = await state.send(room_id=room_id, user_id=1 + n % 10, client_id=uuid.uuid4().hex, message=message,
                                   seed=0 if n == 0 else None)
        assert outcome.status == "ok", outcome
        if progress:
            progress.update()


async def measure(messages: int, rooms: int, body_size: int) -> dict:
    from django.conf import settings

    buffer = settings.CHAT_RECENT_BUFFER
    # One busy room: the idempotency entries' bytes a message over many sends.
    busy = 10**12 + secrets.randbelow(10**9)
    with Progress("redis_memory: busy room", total=messages, unit="sends") as progress:
        await fill(busy, messages, body_size, progress)
    busy_bytes = await room_bytes(busy)
    # Many rooms of a full buffer each, active, then quiet.
    ids = [10**12 + secrets.randbelow(10**9) for _ in range(rooms)]
    active = []
    with Progress("redis_memory: rooms", total=rooms * buffer, unit="sends") as progress:
        for room_id in ids:
            await fill(room_id, buffer, body_size, progress)
            active.append(sum((await room_bytes(room_id)).values()))  # at once: it goes quiet in seconds
    await asyncio.sleep(IDLE_SECONDS + 1)
    for _ in range(100):
        quiet_sizes = [await room_bytes(r) for r in ids]
        if not any("recent" in s for s in quiet_sizes):
            break
        await asyncio.sleep(0.2)
    window_bytes = busy_bytes.get("cid", 0) + busy_bytes.get("cidx", 0)
    per_message = window_bytes / messages
    counter = sum(s.get("meta", 0) for s in quiet_sizes) / rooms
    return {
        "body_characters": body_size,
        "recent_buffer": buffer,
        "window_bytes_per_message": round(per_message, 1),
        "active_room_bytes": round(sum(active) / rooms),
        "quiet_room_bytes_counter_only": round(counter),
        "quiet_room_bytes_with_window": round(sum(sum(s.values()) for s in quiet_sizes) / rooms),
        "window_seconds": settings.CHAT_IDEMPOTENCY_WINDOW,
        # Steady traffic holds one window of entries: bytes per (message/s).
        "bytes_per_message_per_second": round(per_message * settings.CHAT_IDEMPOTENCY_WINDOW),
    }


def print_report(saved: dict) -> None:
    print_table([{"figure": name, "value": value} for name, value in saved["result"].items()], ["figure", "value"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that it runs")
    parser.add_argument("--messages", type=int, default=50_000, help="sends into the busy room")
    parser.add_argument("--rooms", type=int, default=20, help="rooms filled to a full buffer")
    parser.add_argument("--body", type=int, default=100, help="characters a message")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rooms = 5_000, 3
    import os

    os.environ["CHAT_ROOM_IDLE_SECONDS"] = str(IDLE_SECONDS)
    setup_django("chat_bench_redis_memory")
    result = asyncio.run(measure(args.messages, args.rooms, args.body))
    print_report({"result": result})
    total = (10_000 * result["active_room_bytes"] + 1_000_000 * result["quiet_room_bytes_counter_only"]
             + 1_000 * result["bytes_per_message_per_second"])
    print(f"\nRedis for 10,000 active rooms, 1,000,000 quiet ones and 1,000 messages/s: {total / 2**30:.1f} GiB")
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "redis_memory.json").write_text(json.dumps({"environment": environment(), "result": result}, indent=2))
    print(f"results: {out / 'redis_memory.json'}")


if __name__ == "__main__":
    main()
