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
# A balancer's probe may give up after a second (Kubernetes' default): a dependency the instance can
# serve without must not make it time out, or a shared outage takes the fleet out after all. Once its
# check has answered before, a probe waits this long for it, then reports that answer.
QUICK_ANSWER = 0.5
# Without these an instance cannot serve its sockets; without the others only some of it degrades
# (Kafka: acks wait; Postgres: history and new sockets), and an outage every instance shares must
# not take the whole fleet out of the balancer (contract §3).
NEEDED = ("redis",)
# Blocking checks run here, one per dependency at a time (see _in_thread), never on the event
# loop's default executor, whose few threads also resolve the names Redis connections need.
_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readiness")
_running: dict[str, Future] = {}
_last: dict[str, str] = {}  # each blocking check's last answer


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
    hangs holds one thread, not one per probe. Its answer is kept in `_last` when it comes."""
    if name not in _running or _running[name].done():
        _running[name] = _threads.submit(check)
        _running[name].add_done_callback(lambda done: _remember(name, done))
    return asyncio.shield(asyncio.wrap_future(_running[name]))  # a probe's timeout leaves it to the next


async def _degraded_only(name: str, check) -> str:
    """A dependency the instance serves without: its check's answer if it comes within QUICK_ANSWER
    (the whole CHECK_TIMEOUT before its first), else the last one (it goes on for the next probe)."""
    try:
        return await _check(_in_thread(name, check), QUICK_ANSWER if name in _last else CHECK_TIMEOUT)
    except TimeoutError:
        return _last.get(name, "failed: TimeoutError")


async def _redis_answers() -> str:
    """Every shard this instance's room state uses answers (any room may be asked for); else which do not."""
    answers = await room_state().ping(timeout=CHECK_TIMEOUT - 0.5)
    down = [f"{name} ({answer})" for name, answer in answers.items() if answer != "ok"]
    return "failed: " + ", ".join(down) if down else "ok"


def _described(result) -> str:
    """A check's answer as the body names it: "ok", "failed" or the check's own text."""
    if isinstance(result, str):
        return result
    return "ok" if result else "failed"


def _remember(name: str, done: Future) -> None:
    exc = done.exception()
    _last[name] = f"failed: {type(exc).__name__}" if exc else _described(done.result())


async def _check(check, timeout: float = CHECK_TIMEOUT) -> str:
    """The check's answer; TimeoutError when it takes longer than `timeout`."""
    try:
        result = await asyncio.wait_for(check, timeout)
    except TimeoutError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is reported, not raised
        return f"failed: {type(exc).__name__}"
    return _described(result)


async def _answer(check) -> str:
    try:
        return await _check(check)
    except TimeoutError:
        return "failed: TimeoutError"


async def readyz(request: HttpRequest) -> JsonResponse:
    """503 only while this instance cannot serve its sockets: draining, or Redis (every shard its
    room state needs) unreachable; otherwise 200, naming each dependency that is degraded."""
    if drain.is_draining():  # answer at once: the balancer must stop sending traffic here now
        return JsonResponse({"ready": False, "failed": ["draining"], "degraded": [], "checks": {}}, status=503)
    checks = {"database": _degraded_only("database", _database_answers)}
    if settings.REDIS_SHARDS:
        checks["redis"] = _answer(_redis_answers())
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        checks["kafka"] = _degraded_only("kafka", _kafka_answers)
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    for name, result in results.items():  # for alerts: the readiness probes keep it current
        metrics.DEPENDENCY_UP.labels(dependency=name).set(result == "ok")
    down = [name for name, result in results.items() if result != "ok"]
    failed = [name for name in down if name in NEEDED]
    degraded = [name for name in down if name not in NEEDED]
    return JsonResponse({"ready": not failed, "failed": failed, "degraded": degraded, "checks": results},
                        status=503 if failed else 200)
