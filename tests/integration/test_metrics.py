"""Prometheus metrics move when messages flow: the web process at /metrics, the worker on a port
of its own."""

import contextlib
import re
import uuid

import httpx

from chat.bus import records
from chat.bus.topics import ensure_topics
from tests.conftest import child_env, make_room, make_user, session_cookie
from tests.integration.test_worker import created_records, produce
from tests.support import PYTHON, Process, chat_socket, free_port, unique, unique_topic, wait_until


def scrape(url: str) -> dict[str, float]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_web_metrics_count_connections_frames_messages_and_ack_latency(web_a, web_b, alice, bob, room):
    before = scrape(f"{web_a.url}/metrics")
    async with chat_socket(web_a, room.slug, alice.cookie) as a, chat_socket(web_b, room.slug, bob.cookie) as b:
        during = scrape(f"{web_a.url}/metrics")
        assert during["chat_connections_open"] == before.get("chat_connections_open", 0) + 1
        for n in range(5):
            await a.send({"type": "message.send", "body": f"counted {n}", "client_id": uuid.uuid4().hex})
            await a.recv_type("ack")
        await a.send({"type": "nonsense"})
        await a.recv_type("error")
        await b.messages(5)
    after = scrape(f"{web_a.url}/metrics")

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved("chat_messages_sent_total") == 5
    assert moved('chat_frames_in_total{type="message.send"}') == 5
    assert moved('chat_frames_out_total{type="ack"}') == 5
    assert moved('chat_errors_sent_total{code="invalid_frame"}') == 1
    assert moved("chat_send_ack_seconds_count") == 5 and moved("chat_send_ack_seconds_sum") > 0
    assert moved("chat_fanout_deliveries_total") >= 5  # alice's own copies on this instance
    # The process's garbage collections are timed. A young one runs once 20 000 more objects are
    # alive than at the last: open sockets (each keeps its objects) until one has run.
    assert all(f'chat_gc_pause_seconds_count{{generation="{g}"}}' in after for g in range(3))
    young = 'chat_gc_pause_seconds_count{generation="0"}'
    users = [session_cookie(make_user("gc")) for _ in range(10)]
    async with contextlib.AsyncExitStack() as sockets:
        for n in range(200):
            if scrape(f"{web_a.url}/metrics")[young] > before.get(young, 0):
                break
            cookie = users[n % len(users)]  # 20 sockets a user at most: under the per-user cap
            await sockets.enter_async_context(chat_socket(web_a, room.slug, cookie))
        assert scrape(f"{web_a.url}/metrics")[young] > before.get(young, 0), f"no young collection in {n} sockets"
        print(f"a young collection was timed after {n} more sockets")
    wait_until(lambda: scrape(f"{web_a.url}/metrics")["chat_connections_open"] == before.get("chat_connections_open",
                                                                                               0),
               5, message="the connection gauge to drop back")


def test_worker_metrics_on_their_own_port():
    topic = unique_topic("metrics")
    ensure_topics(topic=topic, partitions=2)
    author = make_user("author")
    batch = created_records([make_room(author), make_room(author)], author, 50)
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    port = free_port()
    worker = Process(unique("wmetrics"), [PYTHON, "manage.py", "consume_messages", "--topic", topic, "--group",
                                          unique("group"), "--metrics-port", str(port), "--progress-every", "0.5"],
                     child_env()).start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def stored_all():
            try:
                return scrape(url).get("chat_worker_records_total") == len(batch)
            except httpx.HTTPError:
                return False

        wait_until(stored_all, 60, 0.2, "the worker's records counter to reach the batch")
        samples = scrape(url)
        assert samples["chat_worker_batch_size_count"] >= 1
        assert samples["chat_worker_dead_lettered_total"] == 0
        wait_until(lambda: re.search(r'^chat_worker_lag\{partition="\d"\} 0\.0$', httpx.get(url).text, re.M),
                   10, message="a lag gauge per partition at 0")
    finally:
        worker.stop()
