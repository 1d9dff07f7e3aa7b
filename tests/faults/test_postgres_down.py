"""Postgres stopped while the worker runs: it retries with backoff, skips nothing, and catches up."""

import subprocess

import pytest
from django.db import connection

from chat.bus import records
from chat.bus.topics import ensure_topics
from chat.models import Message
from tests.conftest import make_room, make_user
from tests.integration.test_worker import created_records, produce, run_worker
from tests.support import ROOT, unique, unique_topic, wait_until

pytestmark = pytest.mark.faults


def services(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=180)


def test_worker_waits_out_a_postgres_outage_and_stores_everything_once():
    topic = unique_topic("pgdown")
    ensure_topics(topic=topic, partitions=2)
    author = make_user("author")
    room = make_room(author)
    batch = created_records([room], author, 300)
    worker = run_worker(topic, unique("group"), unique("wpg"), idle=30)
    wait_until(lambda: "partitions assigned: 0,1" in worker.log(), 60, message="worker assigned")
    connection.close()
    services("down", "postgres")
    try:
        produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
        wait_until(lambda: worker.log().count("database write failed") >= 2, 60, message="retries logged")
        assert worker.alive(), worker.log()
    finally:
        services("up", "postgres")
    wait_until(lambda: Message.objects.filter(room=room).count() == len(batch), 60, message="caught up")
    worker.stop()
    assert sorted(Message.objects.filter(room=room).values_list("seq", flat=True)) == list(range(1, 301))
