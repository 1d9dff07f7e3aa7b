"""The real stack for benchmarks: two web instances (daphne or uvicorn), a worker, and users with
sessions, on the services of scripts/services.sh and a database of the benchmark's own."""

import atexit
import os
import subprocess
import sys
import uuid

import psycopg2
from psycopg2 import sql

RUN = uuid.uuid4().hex[:8]
ENV = {
    "DATABASE_URL": "postgres://chat:chat@127.0.0.1:5432/chat_bench",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPIC": f"chat.bench.{RUN}",
    "CHAT_REDIS_PREFIX": f"chat-bench-{RUN}",
    "CHAT_LAYER_PREFIX": f"chat-bench-layer-{RUN}",
    "SECRET_KEY": "bench-secret-key",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "CHAT_RATE_LIMIT": "1000000/1s",
    "LOG_LEVEL": "WARNING",
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "PYTHONUNBUFFERED": "1",
}


def setup_django(fresh_database: bool = True) -> None:
    os.environ.update(ENV)
    subprocess.run([os.path.join(os.path.dirname(__file__), "..", "scripts", "services.sh"), "up"], check=True,
                   stdout=subprocess.DEVNULL)
    if fresh_database:
        admin = psycopg2.connect("postgres://chat:chat@127.0.0.1:5432/postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS chat_bench WITH (FORCE)")
            cursor.execute(sql.SQL("CREATE DATABASE chat_bench"))
        admin.close()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from chat.bus.topics import delete_topics, ensure_topics

    ensure_topics()
    # The run's topics (chat.bench.<run>*) go when it ends, not pile up on the broker run after run.
    atexit.register(delete_topics, prefix=ENV["KAFKA_TOPIC"])


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **ENV, **extra}


def users_with_cookies(count: int, prefix: str) -> list[tuple[str, str]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    out = []
    for n in range(count):
        user = get_user_model().objects.create_user(username=f"{prefix}-{RUN}-{n}")
        client = Client()
        client.force_login(user)
        out.append((user.username, client.cookies["sessionid"].value))
    return out


PYTHON = sys.executable
