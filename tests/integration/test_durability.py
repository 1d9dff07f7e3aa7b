"""Durability cannot fail silently: a process without the persistence receiver refuses to start
(system check for manage.py, the same check in config/asgi.py for daphne and uvicorn), and an ack
is sent only on the receiver's own confirmation that the message is durable."""

import subprocess
import uuid

import pytest
from django.utils import timezone

from chat import protocol
from chat.bus import records
from chat.errors import NotPersisted
from chat.receivers import persist_record
from chat.services.sending import SentMessage, message_confirm
from chat.signals import Persisted, message_sent
from tests.conftest import child_env
from tests.support import PYTHON, ROOT, free_port

DISCONNECT = ("import django; django.setup(); "
              "from chat.receivers import persist_record; from chat.signals import message_sent; "
              "message_sent.disconnect(persist_record); ")


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60, check=False)


def test_manage_py_commands_refuse_to_run_without_the_persistence_receiver():
    intact = run([PYTHON, "manage.py", "check"])
    assert intact.returncode == 0, intact.stderr
    broken = run([PYTHON, "-c", DISCONNECT + "from django.core.management import execute_from_command_line; "
                  "execute_from_command_line(['manage.py', 'check'])"])
    assert broken.returncode != 0
    assert "chat.E001" in broken.stderr and "chat.signals.message_sent" in broken.stderr
    assert "Kafka" in broken.stderr  # this process is configured with Kafka: the message says what is lost


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_servers_refuse_to_start_without_the_persistence_receiver(server):
    port = str(free_port())
    argv = {"daphne": [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", port],
            "uvicorn": [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", port]}[server]
    started = run([*argv, "tests.asgi_without_persistence:application"])
    assert started.returncode != 0
    output = started.stdout + started.stderr
    assert "ImproperlyConfigured" in output and "chat.E001" in output
    assert "chat.signals.message_sent" in output and "chat.signals.message_changed" in output


def sent_message(user_id: int = 1) -> SentMessage:
    message = protocol.message_object(id=str(uuid.uuid4()), room="nowhere", seq=1, author_id=1, author_username="x",
                                      body="hello", created_at=timezone.now(), edited_at=None, client_id="c1")
    return SentMessage("c1", user_id, records.message_record("message.created", message, room_id=1))


async def test_no_ack_without_the_receivers_confirmation():
    async def receiver_that_confirms_nothing(sender, record, **kwargs):
        return None

    async def receiver_that_confirms_another_record(sender, record, **kwargs):
        return Persisted(str(uuid.uuid4()), "kafka")

    message_sent.disconnect(persist_record)
    try:
        for receiver in (receiver_that_confirms_nothing, receiver_that_confirms_another_record):
            message_sent.connect(receiver)
            try:
                with pytest.raises(NotPersisted):
                    await message_confirm(sent_message())
            finally:
                message_sent.disconnect(receiver)
    finally:
        message_sent.connect(persist_record)


async def test_ack_once_kafka_confirms(room, alice):
    sent = sent_message(alice.id)
    sent.record.update(room=room.slug, room_id=room.id)
    ack = await message_confirm(sent)
    assert ack == protocol.ack_frame(client_id="c1", id=sent.record["id"], seq=1)
