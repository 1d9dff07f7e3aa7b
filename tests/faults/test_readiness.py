"""/readyz names the dependency that fails and comes back when it does (Redis, Kafka, Postgres)."""

import subprocess

import httpx
import pytest

from tests.support import ROOT, wait_until

pytestmark = pytest.mark.faults


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=180)


def readiness(server) -> tuple[int, dict]:
    response = httpx.get(f"{server.url}/readyz", timeout=15)
    return response.status_code, response.json()


@pytest.mark.parametrize("service, check", [("redis", "redis"), ("kafka", "kafka"), ("postgres", "database")])
def test_readiness_fails_naming_the_stopped_service_and_recovers(web_a, service, check):
    wait_until(lambda: readiness(web_a)[0] == 200, 60, 0.5, "ready before the outage")
    services("down", service)
    try:
        _, body = wait_until(lambda: (r := readiness(web_a))[0] == 503 and r, 30, 0.5, f"503 without {service}")
        assert body["failed"] == [check], body
        assert httpx.get(f"{web_a.url}/healthz", timeout=5).status_code == 200  # alive, just not ready
    finally:
        services("up", service)
    wait_until(lambda: readiness(web_a)[0] == 200, 60, 0.5, f"ready again after {service} is back")
