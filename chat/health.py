"""Operational endpoints: liveness, readiness and Prometheus metrics."""

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat import drain
from chat.roomstate import room_state

logger = logging.getLogger(__name__)
CHECK_TIMEOUT = 3.0


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text for this process (restrict access at the load balancer)."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()
    return True


def _kafka_ok() -> bool:
    from chat.bus.topics import cluster_answers

    return cluster_answers()


async def readyz(request: HttpRequest) -> JsonResponse:
    if drain.is_draining():  # answer at once: the balancer must stop sending traffic here now
        return JsonResponse({"status": "unavailable", "failed": ["draining"], "checks": {}}, status=503)
    checks = {"database": sync_to_async(_database_ok, thread_sensitive=False)()}
    if settings.REDIS_URL:
        checks["redis"] = room_state().ping()
    if settings.KAFKA_BOOTSTRAP_SERVERS:
        checks["kafka"] = sync_to_async(_kafka_ok, thread_sensitive=False)()
    results = {}
    for name, check in checks.items():
        try:
            results[name] = "ok" if await asyncio.wait_for(check, CHECK_TIMEOUT) else "failed"
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency means "not ready"
            results[name] = f"failed: {type(exc).__name__}"
    failed = [name for name, result in results.items() if result != "ok"]
    status = 503 if failed else 200
    return JsonResponse({"status": "ok" if not failed else "unavailable", "failed": failed, "checks": results},
                        status=status)
