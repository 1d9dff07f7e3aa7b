"""Operational endpoints: liveness, readiness and Prometheus metrics."""

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat import drain, metrics
from chat.roomstate import room_state

CHECK_TIMEOUT = 3.0  # each dependency's answer; the checks run side by side, so the whole probe too
# Without these an instance cannot serve its sockets; without the others only some of it degrades
# (Kafka: acks wait; Postgres: history and new sockets), and an outage every instance shares must
# not take the whole fleet out of the balancer (contract §3).
NEEDED = ("redis",)
# Blocking checks run here, one per dependency at a time (see _in_thread), never on the event
# loop's default executor, whose few threads also resolve the names Redis connections need.
_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readiness")
_running: dict[str, Future] = {}


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text for this process (the public proxy does not serve it; scrape instances directly)."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_answers() -> bool:
    """Blocking: a new connection to the database (none of the process's own) answers a query."""
    params = connection.get_connection_params()
    if connection.vendor == "postgresql":
        params["connect_timeout"] = int(CHECK_TIMEOUT)  # a host that does not answer must not hold the thread
    db = connection.Database.connect(**params)
    try:
        db.cursor().execute("SELECT 1")
    finally:
        db.close()
    return True


def _kafka_answers() -> bool:
    from chat.bus.topics import cluster_answers  # its client gives up after 2.5 s, to bootstrap or a request

    return cluster_answers()


def _in_thread(name: str, check) -> asyncio.Future:
    """The check of `name` still running from an earlier probe, or a new one: a dependency that
    hangs holds one thread, not one per probe."""
    if name not in _running or _running[name].done():
        _running[name] = _threads.submit(check)
    return asyncio.shield(asyncio.wrap_future(_running[name]))  # a probe's timeout leaves it to the next


async def _redis_answers() -> str:
    """Every shard this instance's room state uses answers (any room may be asked for); else which do not."""
    answers = await room_state().ping(timeout=CHECK_TIMEOUT - 0.5)
    down = [f"{name} ({answer})" for name, answer in answers.items() if answer != "ok"]
    return "failed: " + ", ".join(down) if down else "ok"


async def _check(check) -> str:
    try:
        result = await asyncio.wait_for(check, CHECK_TIMEOUT)
        if isinstance(result, str):
            return result
        return "ok" if result else "failed"
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is reported, not raised
        return f"failed: {type(exc).__name__}"


async def readyz(request: HttpRequest) -> JsonResponse:
    """503 only while this instance cannot serve its sockets: draining, or Redis (every shard its
    room state needs) unreachable; otherwise 200, naming each dependency that is degraded."""
    if drain.is_draining():  # answer at once: the balancer must stop sending traffic here now
        return JsonResponse({"ready": False, "failed": ["draining"], "degraded": [], "checks": {}}, status=503)
    checks = {"database": _in_thread("database", _database_answers)}
    if settings.REDIS_SHARDS:
        checks["redis"] = _redis_answers()
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        checks["kafka"] = _in_thread("kafka", _kafka_answers)
    results = dict(zip(checks, await asyncio.gather(*map(_check, checks.values())), strict=True))
    for name, result in results.items():  # for alerts: the readiness probes keep it current
        metrics.DEPENDENCY_UP.labels(dependency=name).set(result == "ok")
    down = [name for name, result in results.items() if result != "ok"]
    failed = [name for name in down if name in NEEDED]
    degraded = [name for name in down if name not in NEEDED]
    return JsonResponse({"ready": not failed, "failed": failed, "degraded": degraded, "checks": results},
                        status=503 if failed else 200)
