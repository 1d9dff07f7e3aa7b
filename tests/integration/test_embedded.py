"""The embedded default (`make run`): one process, SQLite, the in-process channel layer, messages
stored inline without Kafka. Signup, a room, a message acked and in history, resume after a drop."""

import os
import re
import subprocess
import uuid

import httpx

from tests.support import PYTHON, ROOT, WebServer, chat_socket, unique

EMBEDDED_KEYS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "CHAT_REDIS_PREFIX",
                 "CHAT_LAYER_PREFIX", "DEBUG", "SECRET_KEY")


def embedded_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_KEYS}
    # Only the SQLite file is moved out of the checkout; no Redis, no Kafka.
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/chat.sqlite3", DEBUG="true", ALLOWED_HOSTS="127.0.0.1")
    return env


async def test_the_whole_chat_on_one_process_without_services(tmp_path):
    env = embedded_env(tmp_path)
    migrated = subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stderr
    server = WebServer(unique("embedded"), env).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            form = client.get("/accounts/signup/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
            password = "embedded-pass-" + uuid.uuid4().hex
            done = client.post("/accounts/signup/", data={"username": "erin", "password1": password,
                                                          "password2": password, "csrfmiddlewaretoken": token})
            assert done.status_code == 302
            rooms = client.get("/api/rooms/").json()["rooms"]
            assert [r["slug"] for r in rooms] == ["lobby"]  # the first public room comes with migrate
            cookie = client.cookies["sessionid"]
        async with chat_socket(server, "lobby", cookie) as sock:
            await sock.send({"type": "message.send", "body": "hello, single process", "client_id": "e1"})
            ack = await sock.recv_type("ack")
            assert (await sock.seen_or_next("message"))["id"] == ack["id"]
            await sock.send({"type": "reaction.add", "id": ack["id"], "emoji": "👍"})
            assert (await sock.recv_type("reaction"))["reactions"] == [{"emoji": "👍", "count": 1, "users": ["erin"]}]
            await sock.send({"type": "message.send", "body": "a reply", "client_id": "e2", "reply_to": ack["id"]})
            assert (await sock.recv_type("message"))["reply_to"]["id"] == ack["id"]
        history = httpx.get(f"{server.url}/api/rooms/lobby/messages/", cookies={"sessionid": cookie}).json()
        assert [m["body"] for m in history["messages"]] == ["hello, single process", "a reply"]  # stored inline
        first = history["messages"][0]
        assert (first["rev"], first["reply_count"], first["reactions"][0]["count"]) == (2, 1, 1)
        async with chat_socket(server, "lobby", cookie, after=0) as again:
            assert (await again.recv_type("message"))["id"] == ack["id"]
            assert (await again.recv_type("message"))["body"] == "a reply"
            await again.recv_type("resumed")
    finally:
        server.stop()
