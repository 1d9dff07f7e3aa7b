"""The backup and restore procedure of docs/operations.md, end to end: a deployment's database is
dumped with `pg_dump -Fc` while it runs, more messages are acked after the dump, then the dump is
restored into a fresh database, migrated, given a new deployment identity, and the consumer group
is reset to a time before the backup, so the worker on the restored database re-applies from Kafka
what the dump lacks. Every acked message ends up there once, under its acked seq.

The group reset is the deployment's own (stopped) group, to a time, as the procedure does; not a
fresh group reading from the earliest offset, which on a real topic re-applies its whole retention.

The deployment here is the test's own (web instance, worker, topic, group, Redis prefix), not the
run's shared fixtures: restoring means stopping it, and the restored deployment meets the Redis
state the old one left (as in production), which the run's instances must not share."""

import asyncio
import subprocess
import time

import environ
import psycopg2
import redis
from kafka import TopicPartition
from kafka.admin import OffsetTimestamp
from kafka.errors import NoError
from psycopg2 import sql

from chat.bus.topics import admin_client, ensure_topics
from chat.models import Message
from chat.services.rooms import deployment_identity
from tests.conftest import OWNER_DATABASE_URL, SERVICES, child_env
from tests.support import PYTHON, ROOT, Process, WebServer, chat_socket, pg_query, unique, unique_topic, wait_until

PARTITIONS = 4
BATCH = 20  # messages per batch: before the replay point, between it and the dump, after the dump


async def send_batch(server: WebServer, slug: str, cookie: str, label: str) -> list[dict]:
    """BATCH messages sent and acked, in order; each ack is {"client_id", "id", "seq"}."""
    acks = []
    async with chat_socket(server, slug, cookie) as sock:
        for n in range(BATCH):
            client_id = unique(label)
            await sock.send({"type": "message.send", "body": f"{label} {n}", "client_id": client_id})
            ack = await sock.recv_type("ack")
            assert ack["client_id"] == client_id
            acks.append(ack)
    return acks


def manage(*argv: str, database_url: str) -> tuple[str, float]:
    """`manage.py <argv>` as the database's owner (the role that migrates); its output and seconds."""
    started = time.monotonic()
    done = subprocess.run([PYTHON, "manage.py", *argv], cwd=ROOT, env=child_env(DATABASE_URL=database_url),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, time.monotonic() - started


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{argv[0]}: {done.stdout}{done.stderr}"
    return time.monotonic() - started


def admin_connection():
    db = environ.Env.db_url_config(OWNER_DATABASE_URL)
    conn = psycopg2.connect(dbname="postgres", user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                            port=db["PORT"])
    conn.autocommit = True
    return conn


def stored(database_url: str, room_id: int) -> list[tuple[str, int]]:
    """(id, seq) of the room's messages in that database, by seq."""
    return pg_query(database_url, "SELECT id::text, seq FROM chat_message WHERE room_id = %s ORDER BY seq", [room_id])


async def test_a_restored_dump_plus_the_replayed_topic_holds_every_acked_message_once(alice, bob, room, tmp_path):
    topic, group, prefix = unique_topic("restore"), unique("restore"), unique("chat-restore")
    ensure_topics(topic=topic, partitions=PARTITIONS)
    deployment = {"KAFKA_TOPIC": topic, "KAFKA_CONSUMER_GROUP": group, "CHAT_REDIS_PREFIX": prefix,
                  "CHAT_LAYER_PREFIX": f"{prefix}-layer", "CHAT_REPLAY_CATCHUP_SECONDS": "20"}
    restored_name = unique("chat_restored").replace("-", "_")
    restored_url = OWNER_DATABASE_URL.rpartition("/")[0] + "/" + restored_name
    dump = tmp_path / "chat.dump"
    processes: list[Process] = []

    def start(process: Process) -> Process:
        processes.append(process.start())
        return process

    def worker(name: str, env: dict[str, str]) -> Process:
        return start(Process(unique(name), [PYTHON, "manage.py", "consume_messages", "--progress-every", "1"], env))

    async def wait_stored(database_url: str, count: int, what: str) -> list[tuple[str, int]]:
        return await asyncio.to_thread(wait_until, lambda: (rows := stored(database_url, room.id)) and
                                       len(rows) >= count and rows, 30, 0.1, what)

    try:
        # The deployment as it runs: its database is the run's, as the web and worker roles see it.
        old_env = child_env(**deployment)
        old_worker = worker("worker-before", old_env)
        old_web = start(WebServer(unique("web-before"), old_env))
        kept = await send_batch(old_web, room.slug, alice.cookie, "kept")
        await asyncio.to_thread(wait_until, lambda: Message.objects.filter(room=room).count() == BATCH, 30,
                                message="the first batch stored")
        # Where the consumer group will be reset to: before the backup, by a margin (here the second
        # batch), since an acked record may be stored after the dump's snapshot was taken.
        replay_from_ms = int(time.time() * 1000)
        overlap = await send_batch(old_web, room.slug, alice.cookie, "overlap")
        await asyncio.to_thread(wait_until, lambda: Message.objects.filter(room=room).count() == 2 * BATCH, 30,
                                message="the second batch stored")
        dump_seconds = timed(["pg_dump", "-Fc", "-d", OWNER_DATABASE_URL, "-f", str(dump)])
        after = await send_batch(old_web, room.slug, alice.cookie, "after")
        await asyncio.to_thread(wait_until, lambda: Message.objects.filter(room=room).count() == 3 * BATCH, 30,
                                message="the batch after the backup stored")
        acked = kept + overlap + after
        assert [ack["seq"] for ack in acked] == list(range(1, 3 * BATCH + 1))

        # The restore, in the order of docs/operations.md: web and workers stopped, ...
        assert old_web.stop() == 0 and old_worker.stop() == 0
        # ... a fresh database, the dump restored into it, migrate, ...
        admin = admin_connection()
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(restored_name)))
        restore_seconds = timed(["pg_restore", "--exit-on-error", "-j", "2", "-d", restored_url, str(dump)])
        assert [row[1] for row in stored(restored_url, room.id)] == list(range(1, 2 * BATCH + 1))
        _, migrate_seconds = manage("migrate", "--noinput", database_url=restored_url)
        # ... a new deployment identity: the dump carried the old one, which the Redis state names ...
        assert pg_query(restored_url, "SELECT identity::text FROM chat_deployment") == [(deployment_identity(),)]
        manage("deployment_renew", database_url=restored_url)
        [(identity,)] = pg_query(restored_url, "SELECT identity::text FROM chat_deployment")
        assert identity != deployment_identity()
        # ... and the group reset to the replay point (kafka-consumer-groups.sh --reset-offsets
        # --to-datetime, done here through the admin API): the worker re-applies the records since.
        kafka = admin_client()
        try:
            reset = kafka.reset_group_offsets(group, {TopicPartition(topic, partition): OffsetTimestamp(replay_from_ms)
                                                      for partition in range(PARTITIONS)})
        finally:
            kafka.close()
        assert all(result["error"] is NoError for result in reset.values()), reset
        # One room, so one partition holds records: it restarts at the first record after the point.
        assert sorted(result["offset"] for result in reset.values())[-1] == BATCH

        # Workers first, then web, all on the restored database.
        new_env = child_env(**deployment, DATABASE_URL=restored_url)
        worker("worker-restored", new_env)
        rows = await wait_stored(restored_url, 3 * BATCH, "the restored database to catch up from Kafka")
        assert rows == [(ack["id"], ack["seq"]) for ack in acked]  # every acked message once, as acked
        web = start(WebServer(unique("web-restored"), new_env))
        async with chat_socket(web, room.slug, bob.cookie, after=0) as reader:
            replayed = await reader.messages(3 * BATCH, timeout=30)
            assert [(m["id"], m["seq"]) for m in replayed] == [(ack["id"], ack["seq"]) for ack in acked]
            assert (await reader.recv_type("resumed"))["last_seq"] == acked[-1]["seq"]
            fresh = await send_batch(web, room.slug, alice.cookie, "fresh")
            assert fresh[0]["seq"] > acked[-1]["seq"]
            # The Redis state the old database left was not trusted: a new epoch, above the clock.
            assert fresh[0]["seq"] >= time.time_ns() // 1000 - 60_000_000
            shard = redis.Redis.from_url(SERVICES["REDIS_URL"], decode_responses=True)
            assert shard.hget(f"{prefix}:shard:identity", "deployment") == identity
            live = await reader.messages(BATCH)
            assert [m["id"] for m in live] == [ack["id"] for ack in fresh]
        rows = await wait_stored(restored_url, 4 * BATCH, "the new messages stored")
        assert rows == [(ack["id"], ack["seq"]) for ack in acked + fresh]
        print(f"\npg_dump -Fc: {dump_seconds:.2f} s, pg_restore -j 2: {restore_seconds:.2f} s, "
              f"migrate: {migrate_seconds:.2f} s ({2 * BATCH} messages, {dump.stat().st_size} bytes)")
    finally:
        for process in reversed(processes):
            process.stop()
        admin = admin_connection()
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(restored_name)))
        admin.close()
        kafka = admin_client()
        try:
            kafka.delete_groups([group])
        finally:
            kafka.close()
        shard = redis.Redis.from_url(SERVICES["REDIS_URL"])
        keys = list(shard.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            shard.delete(*keys)
