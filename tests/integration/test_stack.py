"""`make stack` (scripts/stack.sh): the local deployment behind nginx. A browser-free smoke test:
two clients on the balanced port land on different daphne instances and talk to each other,
and /metrics is served by each instance but not through nginx."""

import re
import socket
import subprocess
import uuid

import httpx
import pytest

from tests.conftest import child_env
from tests.support import ROOT, chat_socket, free_port

pytestmark = pytest.mark.skipif(subprocess.run(["which", "nginx"], capture_output=True, check=False).returncode != 0,
                                reason="nginx is not installed (scripts/stack.sh installs it)")


class Endpoint:
    def __init__(self, port: int) -> None:
        self.port, self.url = port, f"http://127.0.0.1:{port}"


def raw_get(port: int, target: str) -> tuple[int, str]:
    """A GET of `target` exactly as written (no client normalizing it): status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        response = b"".join(iter(lambda: conn.recv(65536), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def open_sockets(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return float(re.search(r"^chat_connections_open ([0-9.]+)$", text, re.M).group(1))


@pytest.fixture
def stack(tmp_path):
    ports = {"STACK_PORT": free_port(), "web": [free_port(), free_port()], "workers": [free_port(), free_port()]}
    env = child_env(STACK_DIR=str(tmp_path), STACK_PORT=str(ports["STACK_PORT"]),
                    STACK_WEB_PORTS=" ".join(map(str, ports["web"])),
                    STACK_WORKER_METRICS_PORTS=" ".join(map(str, ports["workers"])))
    script = str(ROOT / "scripts" / "stack.sh")
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield ports, up.stdout
    finally:
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stderr


async def test_two_clients_through_nginx_talk_across_both_instances(stack, alice, bob, room):
    ports, output = stack
    assert f"http://127.0.0.1:{ports['STACK_PORT']}/" in output and "web-1.log" in output
    balancer = Endpoint(ports["STACK_PORT"])
    assert httpx.get(f"{balancer.url}/readyz", timeout=10).status_code == 200
    # Metrics only from inside: each instance serves them, nginx does not, however the path is spelled.
    for target in ("/metrics", "/metrics?format=text", "/metrics/", "/metrics/x", "//metrics", "/%6Detrics",
                   "/./metrics", "/ws/../metrics"):
        status, body = raw_get(ports["STACK_PORT"], target)
        assert status in (403, 404) and "chat_connections_open" not in body, (target, status)
    for port in ports["web"]:
        assert raw_get(port, "/metrics")[0] == 200
    async with chat_socket(balancer, room.slug, alice.cookie) as a, chat_socket(balancer, room.slug, bob.cookie) as b:
        # nginx round-robins, so the two sockets are on different instances.
        assert [open_sockets(port) for port in ports["web"]] == [1, 1]
        await a.send({"type": "message.send", "body": "through nginx", "client_id": uuid.uuid4().hex})
        assert (await b.recv_type("message"))["body"] == "through nginx"
        assert (await a.recv_type("ack"))["seq"] >= 1
    for port in ports["workers"]:
        assert "chat_worker_records_total" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
