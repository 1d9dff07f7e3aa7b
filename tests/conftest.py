"""The test stack: real Postgres, Redis and Kafka (started by `scripts/services.sh up`), a fresh
database, a topic and key prefix of this run's own, and web instances and a worker as processes.

The database roles are the deployment's: migrations run as the owner, in a process of their own;
web instances log in as chat_web and workers as chat_worker (tests.support), and so does this
process, which sets up users and rooms and calls the worker's storage code."""

import os
import subprocess
import uuid

from tests.support import database_role_url

RUN = uuid.uuid4().hex[:8]
OWNER_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", f"postgres://chat:chat@127.0.0.1:5432/chat_test_{RUN}")
SERVICES = {
    "DATABASE_URL": database_role_url(OWNER_DATABASE_URL, "worker"),
    "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "KAFKA_BOOTSTRAP_SERVERS": os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
}
TEST_ENV = {
    **SERVICES,
    "KAFKA_TOPIC": f"chat.test.{RUN}",
    "KAFKA_CONSUMER_GROUP": f"store-{RUN}",
    "CHAT_REDIS_PREFIX": f"chat-test-{RUN}",
    "CHAT_LAYER_PREFIX": f"chat-test-layer-{RUN}",
    "SECRET_KEY": "test-secret-key-not-for-production",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false",
    "CHAT_RATE_LIMIT": "100000/1s",
    "CHAT_PRESENCE_TTL": "6",
    "KAFKA_DELIVERY_TIMEOUT_MS": "10000",
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DJANGO_ALLOW_ASYNC_UNSAFE": "true",  # tests set up users and rooms from async test bodies
    "PYTHONUNBUFFERED": "1",
}
os.environ.update(TEST_ENV)

import django  # noqa: E402
import environ  # noqa: E402
import psycopg2  # noqa: E402
import pytest  # noqa: E402
from psycopg2 import sql  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402

from chat.services.rooms import room_create  # noqa: E402
from tests.support import PYTHON, ROOT, Process, WebServer, unique  # noqa: E402


def child_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(overrides)
    return env


@pytest.fixture(scope="session", autouse=True)
def database():
    """A fresh database of this run's own (runs from two checkouts can share the server), created
    and migrated by its owner."""
    from django.db import connections

    db = environ.Env.db_url_config(OWNER_DATABASE_URL)
    admin = psycopg2.connect(dbname="postgres", user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                             port=db["PORT"])
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db["NAME"])))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    admin.close()
    migrate = subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                             env=child_env(DATABASE_URL=OWNER_DATABASE_URL), capture_output=True, text=True,
                             timeout=300, check=False)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    from chat.bus.topics import ensure_topics

    ensure_topics()
    yield
    connections.close_all()
    _delete_run_topics()
    admin = psycopg2.connect(dbname="postgres", user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
                             port=db["PORT"])
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db["NAME"])))
    admin.close()


def _delete_run_topics() -> None:
    """The run's topics (its own, the tests' under it, their dead-letter topics) go with it."""
    from django.conf import settings

    from chat.bus.topics import delete_topics

    try:
        delete_topics(prefix=settings.KAFKA_TOPIC)
    except Exception as exc:  # a cleanup that fails must not fail the run; it says so
        print(f"\ncould not delete this run's Kafka topics ({settings.KAFKA_TOPIC}*): {exc}")


@pytest.fixture(scope="session")
def web_a():
    server = WebServer(f"web-a-{RUN}", child_env()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def web_b():
    server = WebServer(f"web-b-{RUN}", child_env()).start()
    yield server
    server.stop()


SHARED_WORKER = pytest.StashKey[Process]()


@pytest.fixture(scope="session")
def worker(request):
    # Its group is KAFKA_CONSUMER_GROUP, the one the web instances' resumes wait for.
    proc = Process(f"worker-{RUN}", [PYTHON, "manage.py", "consume_messages", "--progress-every", "2"],
                   child_env()).start()
    request.session.stash[SHARED_WORKER] = proc
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def shared_worker_alive(request):
    """The shared worker must outlive every test once started: its death shows, with its log, in
    the test during which it died, not as timeouts waiting for rows in the tests after it."""
    proc = request.session.stash.get(SHARED_WORKER, None)
    if proc is not None:
        assert proc.alive(), f"the shared worker exited before this test:\n{proc.log()[-6000:]}"
    yield
    proc = request.session.stash.get(SHARED_WORKER, None)
    if proc is not None:
        assert proc.alive(), f"the shared worker exited during this test:\n{proc.log()[-6000:]}"


def make_user(prefix: str = "user", **extra):
    return get_user_model().objects.create_user(username=unique(prefix), password="pw-" + uuid.uuid4().hex, **extra)


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def make_room(owner, *, private: bool = False):
    return room_create(owner=owner, name=unique("room"), private=private)


@pytest.fixture
def alice():
    user = make_user("alice")
    user.cookie = session_cookie(user)
    return user


@pytest.fixture
def bob():
    user = make_user("bob")
    user.cookie = session_cookie(user)
    return user


@pytest.fixture
def room(alice):
    return make_room(alice)


def pytest_collection_modifyitems(config, items):
    """Fault scenarios stop and restart the real services: run them after everything else."""
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)


@pytest.fixture(autouse=True)
def fresh_db_connection():
    """Each test starts on a live database connection, even after a fault test restarted Postgres."""
    from django.db import connections

    connections.close_all()
    yield
