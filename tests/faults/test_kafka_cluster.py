"""Three brokers (scripts/services.sh up kafka-cluster, started for this module and stopped after):
the app's topics get three replicas and min.insync.replicas 2; one broker killed with kill -9 while
clients send loses no acked message, stores none twice and keeps acking once its partitions have new
leaders, with no not_persisted; two of three gone, nothing is acked and senders get not_persisted
within KAFKA_DELIVERY_TIMEOUT_MS, and once the brokers return their re-sends are stored once."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.db.models import Count
from django.test import override_settings
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from chat.bus.backlog import room_partition
from chat.bus.topics import delete_topics, ensure_topics
from chat.models import Message
from tests.conftest import RUN, child_env, make_room
from tests.support import PYTHON, ROOT, Process, WebServer, chat_socket, free_port, unique, unique_topic, wait_until

pytestmark = pytest.mark.faults

BROKERS = "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194"
NODES = (1, 2, 3)  # node.id = broker id; node N's broker listens on 9191 + N
PARTITIONS = 6
METRICS_PORT = free_port()  # the cluster's worker's
CACHE = Path(os.environ.get("CHAT_SERVICES_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "chat-services")


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=240)


def admin() -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=BROKERS, request_timeout_ms=5_000)


def brokers_up() -> set[int]:
    client = admin()
    try:
        return {b["broker_id"] for b in client.describe_cluster()["brokers"] if not b.get("is_fenced")}
    finally:
        client.close()


def in_sync(topic: str) -> bool:
    """Every partition of `topic` has all three replicas in sync."""
    client = admin()
    try:
        (info,) = client.describe_topics([topic])
        return all(len(p["isr_nodes"]) == 3 for p in info["partitions"])
    finally:
        client.close()


def worker_metric(name: str, **labels: str) -> float | None:
    """A sample of the cluster's worker's metrics, None while it has none."""
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def kill_node(node: int) -> None:
    """kill -9 node `node` of the cluster and wait until it is gone."""
    pid = int((CACHE / "kafka-cluster" / f"node{node}" / "kafka.pid").read_text())
    assert "kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
               10, message=f"node {node} gone")


@pytest.fixture(scope="module")
def cluster():
    """The three-node cluster for this module's tests, with a topic and worker of its own."""
    services("up", "kafka-cluster")
    topic = unique_topic("cluster")
    try:
        wait_until(lambda: brokers_up() == set(NODES), 60, 0.5, message="three brokers registered and unfenced")
        with override_settings(KAFKA_BOOTSTRAP_SERVERS=BROKERS.split(",")):
            assert ensure_topics(topic=topic, partitions=PARTITIONS) == []
        env = child_env(KAFKA_BOOTSTRAP_SERVERS=BROKERS, KAFKA_TOPIC=topic, KAFKA_CONSUMER_GROUP=f"store-{RUN}-cluster")
        worker = Process(unique("worker-cluster"), [PYTHON, "manage.py", "consume_messages", "--progress-every", "2",
                                                    "--metrics-port", str(METRICS_PORT), "--cluster-check-every", "1"],
                         env).start()
        try:
            wait_until(lambda: "partitions assigned: " in worker.log(), 60, message="the worker assigned")
            yield topic, env
            assert worker.alive(), worker.log()[-3000:]
        finally:
            worker.stop()
    finally:
        try:
            with override_settings(KAFKA_BOOTSTRAP_SERVERS=BROKERS.split(",")):
                delete_topics(prefix=topic)  # the cluster keeps its data between runs
        finally:
            services("down", "kafka-cluster")


def test_the_apps_topics_have_three_replicas_and_min_insync_two(cluster):
    topic, _ = cluster
    client = admin()
    try:
        for name in (topic, f"{topic}.dead"):
            (info,) = client.describe_topics([name])
            assert len(info["partitions"]) == PARTITIONS, name
            assert {len(p["replica_nodes"]) for p in info["partitions"]} == {3}, name
            configs = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, None)],
                                              config_filter="all")["topic"][name]
            assert configs["min.insync.replicas"]["value"] == "2", name
            assert configs["unclean.leader.election.enable"]["value"] == "false", name
    finally:
        client.close()


class Sender:
    """One socket in its own room sending a message every `interval` s until stopped; keeps when
    each was sent and what came back for it (its ack or error), by client_id."""

    def __init__(self, sock, room, interval: float) -> None:
        self.sock, self.room, self.interval = sock, room, interval
        self.sent: dict[str, float] = {}
        self.acks: dict[str, tuple[dict, float]] = {}
        self.errors: dict[str, tuple[dict, float]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while not stop.is_set():
                await self.send(uuid.uuid4().hex)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
            deadline = time.monotonic() + 60
            while len(self.acks) + len(self.errors) < len(self.sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            reader.cancel()

    async def send(self, client_id: str) -> None:
        self.sent.setdefault(client_id, time.monotonic())
        await self.sock.send({"type": "message.send", "body": f"to the cluster {len(self.sent)}",
                              "client_id": client_id})

    async def _read(self) -> None:
        while True:
            frame = json.loads(await self.sock.ws.recv())
            if frame["type"] == "ack":
                self.acks.setdefault(frame["client_id"], (frame, time.monotonic()))
            elif frame["type"] == "error" and frame.get("client_id"):
                self.errors[frame["client_id"]] = (frame, time.monotonic())


@contextlib.asynccontextmanager
async def sockets_in(server: WebServer, rooms, cookie: str):
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(chat_socket(server, room.slug, cookie)) for room in rooms]


def rooms_over_every_partition(owner) -> list:
    """One room on each partition (a few sockets, well under the per-user cap)."""
    by_partition = {}
    while len(by_partition) < PARTITIONS:
        room = make_room(owner)
        by_partition.setdefault(room_partition(room.id, list(range(PARTITIONS))), room)
    return list(by_partition.values())


def leaders(topic: str) -> dict[int, int]:
    client = admin()
    try:
        (info,) = client.describe_topics([topic])
        return {p["partition_index"]: p["leader_id"] for p in info["partitions"]}
    finally:
        client.close()


def assert_stored_once(rooms, acked: dict[str, dict]) -> None:
    """Every acked message is in Postgres with its acked id and seq, and nothing twice."""
    wait_until(lambda: Message.objects.filter(room__in=rooms).count() >= len(acked), 90,
               message="every acked message stored")
    stored = {m.client_id: m for m in Message.objects.filter(room__in=rooms)}
    assert len(stored) == Message.objects.filter(room__in=rooms).count() == len(acked)
    for client_id, ack in acked.items():
        assert (str(stored[client_id].id), stored[client_id].seq) == (ack["id"], ack["seq"])
    assert not Message.objects.filter(room__in=rooms).values("room", "seq").annotate(n=Count("id")).filter(n__gt=1)


async def test_one_broker_killed_while_clients_send_loses_nothing_and_acks_go_on(cluster, alice, capsys):
    topic, env = cluster
    # The default delivery timeout: leaders move within it (the cluster fences a dead broker after 6 s).
    web = WebServer(unique("web-cluster"), {**env, "KAFKA_DELIVERY_TIMEOUT_MS": "30000"}).start()
    try:
        rooms = rooms_over_every_partition(alice)
        led = leaders(topic)
        victim = max(NODES, key=lambda node: sum(leader == node for leader in led.values()))
        moved = {room.id for room in rooms if led[room_partition(room.id, list(led))] == victim}
        stop = asyncio.Event()
        async with sockets_in(web, rooms, alice.cookie) as sockets:
            senders = [Sender(sock, room, 0.1) for sock, room in zip(sockets, rooms, strict=True)]
            running = asyncio.gather(*(sender.run(stop) for sender in senders))
            await asyncio.sleep(2)
            await asyncio.to_thread(kill_node, victim)
            killed_at = time.monotonic()
            await asyncio.sleep(15)
            stop.set()
            await running
        # What the alerts watch: the worker finds the broker gone and every partition a replica short,
        # none below min.insync (on a loaded machine a live follower may lag out of the ISR for a while).
        await asyncio.to_thread(
            wait_until, lambda: worker_metric("chat_kafka_broker_reachable", broker=str(victim)) == 0
            and worker_metric("chat_kafka_partitions_under_replicated", topic=topic) == PARTITIONS
            and worker_metric("chat_kafka_partitions_under_min_isr", topic=topic) == 0, 30, 0.2,
            "the worker's metrics to show the broker gone and every partition with two replicas in sync")
        errors = [frame for s in senders for frame, _ in s.errors.values()]
        assert not errors, errors[:5]
        sent = sum(len(s.sent) for s in senders)
        acked = {cid: ack for s in senders for cid, (ack, _) in s.acks.items()}
        assert len(acked) == sent, f"{sent - len(acked)} of {sent} sends never answered"
        # On the dead broker's partitions: the longest a send waited for its ack, and the first ack
        # of a message sent after the kill.
        on_victim = [s for s in senders if s.room.id in moved]
        waits = [at - s.sent[cid] for s in on_victim for cid, (_, at) in s.acks.items()]
        resumed = min(at for s in on_victim for cid, (_, at) in s.acks.items() if s.sent[cid] > killed_at) - killed_at
        with capsys.disabled():
            print(f"\nbroker {victim} of 3 killed (kill -9) while {len(senders)} sockets sent: {sent} sent, all "
                  f"acked; {len(moved)} rooms on its partitions: first ack of a message sent after the kill "
                  f"{resumed:.1f} s after it, longest wait for an ack {max(waits):.1f} s")
        assert_stored_once(rooms, acked)
    finally:
        web.stop()
        await asyncio.to_thread(services, "up", "kafka-cluster")  # the killed node back, for what follows
        await asyncio.to_thread(wait_until, lambda: brokers_up() == set(NODES) and in_sync(topic), 90, 0.5,
                                "the cluster whole again")
    await asyncio.to_thread(wait_until, lambda: worker_metric("chat_kafka_broker_reachable", broker=str(victim)) == 1
                            and worker_metric("chat_kafka_partitions_under_replicated", topic=topic) == 0,
                            30, 0.5, "the worker's metrics whole again")


async def test_two_of_three_brokers_down_nothing_is_acked_and_resends_are_stored_once(cluster, alice, capsys):
    topic, env = cluster
    delivery_ms = 4000  # short, so senders hear within seconds
    web = WebServer(unique("web-cluster2"), {**env, "KAFKA_DELIVERY_TIMEOUT_MS": str(delivery_ms)}).start()
    room = make_room(alice)
    try:
        async with chat_socket(web, room.slug, alice.cookie) as sock:
            sender = Sender(sock, room, 0)
            reader = asyncio.create_task(sender._read())
            try:
                await sender.send("warm-up")
                await asyncio.to_thread(wait_until, lambda: "warm-up" in sender.acks, 30, 0.05, "the warm-up acked")
                # The room's leader among them: its records are in flight to a broker that dies, the
                # case where kafka-python's producer stops expiring records (MessageProducer._expire).
                led = leaders(topic)
                leader = led[room_partition(room.id, list(led))]
                others = sorted({leader, next(node for node in NODES if node != leader)})
                for node in others:
                    await asyncio.to_thread(kill_node, node)
                lost = [f"lost-{n}" for n in range(5)]
                for client_id in lost:
                    await sender.send(client_id)
                    await asyncio.sleep(0.2)
                await asyncio.to_thread(wait_until, lambda: set(lost) <= set(sender.errors) | set(sender.acks),
                                        delivery_ms / 1000 + 20, 0.05, "an answer to every send")
                assert not set(lost) & set(sender.acks), "acked with two of three brokers down"
                assert {sender.errors[cid][0]["code"] for cid in lost} == {"not_persisted"}
                slowest = max(sender.errors[cid][1] - sender.sent[cid] for cid in lost)
                with capsys.disabled():
                    print(f"\nbrokers {others} of 3 killed: {len(lost)} sends, none acked, each told not_persisted "
                          f"within {slowest:.1f} s (KAFKA_DELIVERY_TIMEOUT_MS={delivery_ms})")
                assert slowest <= delivery_ms / 1000 + 1
                await asyncio.to_thread(wait_until, lambda: [worker_metric("chat_kafka_broker_reachable", broker=str(n))
                                                             for n in NODES] == [int(n not in others) for n in NODES],
                                        10, 0.2, "the worker's metrics to show two brokers gone")
                await asyncio.to_thread(services, "up", "kafka-cluster")
                # Re-sent with the same client_id, as a client does until it gets its ack.
                deadline = time.monotonic() + 90
                for client_id in lost:
                    while client_id not in sender.acks:
                        assert time.monotonic() < deadline, f"{client_id} not acked after the brokers returned"
                        sender.errors.pop(client_id, None)
                        await sender.send(client_id)
                        await asyncio.to_thread(wait_until, lambda c=client_id: c in sender.acks or c in sender.errors,
                                                delivery_ms / 1000 + 10, 0.05, "an answer")
            finally:
                reader.cancel()
        acked = {cid: ack for cid, (ack, _) in sender.acks.items()}
        assert set(acked) == {"warm-up", *lost}
        assert_stored_once([room], acked)
    finally:
        web.stop()
        await asyncio.to_thread(services, "up", "kafka-cluster")
