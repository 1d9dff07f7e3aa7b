"""/readyz (contract §3): 503 only while the instance cannot serve its sockets (Redis unreachable,
or draining); Kafka or Postgres out leaves it ready, naming what is degraded. Each instance here
is pointed at a port nothing listens on for the dependencies that are "down", so the shared
services stay up for every other test (tests/faults/test_readiness.py stops the real ones)."""

import time

import httpx
import pytest

from tests.conftest import RUN, SERVICES, child_env
from tests.support import WebServer, free_port

NOWHERE = {
    "database": ("DATABASE_URL", "postgres://chat:chat@127.0.0.1:{port}/chat"),
    "redis": ("REDIS_URL", "redis://127.0.0.1:{port}/0"),
    "kafka": ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:{port}"),
}


@pytest.mark.parametrize("down, status, failed, degraded", [
    ((), 200, [], []),
    (("kafka",), 200, [], ["kafka"]),
    (("database",), 200, [], ["database"]),
    (("database", "kafka"), 200, [], ["database", "kafka"]),
    (("redis",), 503, ["redis"], []),
    (("redis", "kafka"), 503, ["redis"], ["kafka"]),
])
def test_readiness_fails_only_without_redis_and_names_what_is_degraded(down, status, failed, degraded):
    overrides = {NOWHERE[name][0]: NOWHERE[name][1].format(port=free_port()) for name in down}
    assert set(overrides) <= set(SERVICES)
    server = WebServer(f"web-ready-{'-'.join(down) or 'all'}-{RUN}", child_env(**overrides)).start()
    try:
        # Probed again and again, as a balancer does: a check that hangs must not pile up threads
        # until the other checks wait behind it.
        for probe in range(8 if down == ("kafka",) else 1):
            started = time.monotonic()
            response = httpx.get(f"{server.url}/readyz", timeout=15)
            took = time.monotonic() - started
            assert took < 5, "each check is bounded, and they run side by side"
            # After its first answer a hanging Kafka is reported as last found, within a balancer's
            # usual probe timeout (1 s in Kubernetes): a shared outage must not fail every instance.
            assert probe == 0 or took < 1, f"probe {probe + 1} took {took:.2f} s"
            body = response.json()
            assert response.status_code == status, body
            assert body["ready"] is (status == 200)
            assert body["failed"] == failed and sorted(body["degraded"]) == degraded, body
            assert {name for name, result in body["checks"].items() if result != "ok"} == set(down), body
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200  # alive either way
        # SIGTERM: drained and gone in seconds, not held by a check still waiting on what is down.
        assert server.stop(timeout=10) == 0, server.log()[-2000:]
    finally:
        server.stop()
