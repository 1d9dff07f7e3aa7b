"""`make stack-scaled` (scripts/stack.sh with STACK_REDIS=shards STACK_KAFKA=cluster): the local
deployment behind nginx on the three Sentinel-managed Redis shards and the three-node Kafka. Rooms
on every shard carry messages between clients on both instances, and the workers store each
acked message once under its acked seq."""

import subprocess
import uuid

import httpx
import pytest
from django.test import override_settings

from chat.bus.topics import delete_topics
from chat.models import Message
from tests.conftest import child_env, make_user, session_cookie
from tests.faults.test_redis_shards import rooms_on_every_shard
from tests.integration.test_stack import Endpoint, open_sockets
from tests.support import ROOT, chat_socket, free_port, wait_until

pytestmark = [pytest.mark.faults,
              pytest.mark.skipif(subprocess.run(["which", "nginx"], capture_output=True, check=False).returncode != 0,
                                 reason="nginx is not installed (scripts/stack.sh installs it)")]

CLUSTER = "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194"


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=240)


@pytest.fixture
def scaled_stack(tmp_path):
    ports = {"STACK_PORT": free_port(), "web": [free_port(), free_port()], "workers": [free_port(), free_port()]}
    env = child_env(STACK_DIR=str(tmp_path), STACK_PORT=str(ports["STACK_PORT"]),
                    STACK_WEB_PORTS=" ".join(map(str, ports["web"])),
                    STACK_WORKER_METRICS_PORTS=" ".join(map(str, ports["workers"])),
                    STACK_REDIS="shards", STACK_KAFKA="cluster")
    for name in ("REDIS_URLS", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)  # the script's own choice for the scaled topology
    script = str(ROOT / "scripts" / "stack.sh")
    try:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=400, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        yield ports, up.stdout, env["KAFKA_TOPIC"]
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stderr
    finally:
        subprocess.run([script, "down"], env=env, capture_output=True, timeout=120, check=False)
        try:
            with override_settings(KAFKA_BOOTSTRAP_SERVERS=CLUSTER.split(",")):
                delete_topics(prefix=env["KAFKA_TOPIC"])  # the cluster keeps its data between runs
        finally:
            services("down", "kafka-cluster")
            services("down", "redis-shards")


async def test_the_scaled_stack_carries_rooms_on_every_shard_and_stores_them_once(scaled_stack):
    ports, output, _ = scaled_stack
    assert "redis: redis+sentinel://127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382/shard0/0" in output
    assert f"kafka: {CLUSTER}" in output
    balancer = Endpoint(ports["STACK_PORT"])
    assert httpx.get(f"{balancer.url}/readyz", timeout=10).status_code == 200
    alice, bob = make_user("alice"), make_user("bob")
    rooms = rooms_on_every_shard(alice, per_shard=1)
    acked: dict[str, tuple[str, int]] = {}
    for room in rooms:
        async with chat_socket(balancer, room.slug, session_cookie(alice)) as a, \
                chat_socket(balancer, room.slug, session_cookie(bob)) as b:
            # nginx round-robins, so the two sockets are on different instances.
            assert sorted(open_sockets(port) for port in ports["web"]) == [1, 1]
            for n in range(3):
                client_id = uuid.uuid4().hex
                await a.send({"type": "message.send", "body": f"{room.slug} {n}", "client_id": client_id})
                ack = await a.recv_type("ack", timeout=30)
                acked[client_id] = (ack["id"], ack["seq"])
                assert (await b.recv_type("message"))["body"] == f"{room.slug} {n}"
        wait_until(lambda: sum(open_sockets(port) for port in ports["web"]) == 0, 10, message="sockets closed")
    wait_until(lambda: Message.objects.filter(room__in=rooms).count() >= len(acked), 90,
               message="every acked message stored by the stack's workers")
    stored = {m.client_id: (str(m.id), m.seq) for m in Message.objects.filter(room__in=rooms)}
    assert stored == acked
