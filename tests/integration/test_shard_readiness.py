"""/readyz with several Redis shards (contract §3): 503 when any shard this instance's rooms may
live on does not answer, naming it; 200 when every shard answers. Two databases of the shared Redis
stand for two shards, and a port nothing listens on for one that is down."""

import httpx

from tests.conftest import RUN, SERVICES, child_env
from tests.support import WebServer, free_port


def readiness(name: str, urls: str) -> tuple[int, dict]:
    server = WebServer(f"web-shard-ready-{name}-{RUN}", child_env(REDIS_URLS=urls)).start()
    try:
        response = httpx.get(f"{server.url}/readyz", timeout=15)
        return response.status_code, response.json()
    finally:
        server.stop()


def test_readiness_needs_every_shard():
    base = SERVICES["REDIS_URL"].rsplit("/", 1)[0]
    status, body = readiness("up", f"{base}/0 {base}/1")
    assert status == 200 and body["checks"]["redis"] == "ok", body
    dead = free_port()
    status, body = readiness("down", f"{base}/0 redis://127.0.0.1:{dead}/0")
    assert status == 503 and body["failed"] == ["redis"], body
    assert f"127.0.0.1:{dead}" in body["checks"]["redis"] and f"{base}/0" not in body["checks"]["redis"], body
