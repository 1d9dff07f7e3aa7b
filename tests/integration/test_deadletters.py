"""manage.py deadletters against the real broker and Postgres: a record the worker dead-lettered
(its room missing) is listed and shown, fails to re-drive until the room exists, then is applied
exactly once; a malformed one fails on every run without stopping the others; a dry run writes
nothing; every partition is read; a late record never overwrites a newer message; Kafka
unreachable is a clear error, not a hang."""

import random
import time
from io import StringIO
from types import SimpleNamespace

from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone
from uuid6 import uuid7

from chat import protocol
from chat.bus import records
from chat.bus.deadletter import DeadLetters
from chat.bus.topics import dead_letter_topic, ensure_topics
from chat.management.commands import deadletters as deadletters_command
from chat.models import DeadLetterRedrive, Message, Room
from chat.services.persistence import messages_persist
from tests.conftest import make_room, make_user
from tests.integration.test_worker import produce, run_worker
from tests.support import free_port, unique, unique_topic


def message_created(room_id: int, author, seq: int) -> dict:
    """A message.created record as the web instances write it (contract §5 and §8: rev 1 on create)."""
    message = protocol.message_object(
        id=str(uuid7()), room=f"room-{room_id}", seq=seq, author_id=author.id, author_username=author.username,
        body=f"lost and found {seq}", created_at=timezone.now(), edited_at=None, client_id=None, rev=1)
    return records.message_record("message.created", message, room_id=room_id)


def deadletters(*args: str) -> tuple[int, str, str]:
    """Run the command as cron would: (exit status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("deadletters", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


def ledger(topic: str) -> dict[int, tuple[str, int]]:
    """offset -> (outcome, attempts) of the topic's dead letters."""
    return {entry.offset: (entry.outcome, entry.attempts)
            for entry in DeadLetterRedrive.objects.filter(topic=dead_letter_topic(topic))}


def test_a_dead_letter_fails_until_its_room_exists_then_is_applied_once_and_never_again():
    topic = unique_topic("redrive")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    # A room id no room has (nor will: far above the sequence), as if the room were deleted meanwhile.
    room_id = 2**40 + random.randrange(2**20)
    orphan = message_created(room_id, author, 1)
    produce(topic, [(b"1", b"{not json"), (records.record_key(orphan), records.encode(orphan))])
    worker = run_worker(topic, unique("group"), unique("wredrive"))
    assert worker.proc.wait(60) == 0, worker.log()
    try:
        # list: both, with their reasons; nothing re-driven yet.
        code, out, err = deadletters("list", "--topic", topic)
        assert code == 0, err
        lines = out.splitlines()
        # The worker's two writers dead-letter them in either order (the two keys are two rooms).
        (malformed,) = [line for line in lines[:2] if f"source={topic}:0:0  " in line]
        (refused,) = [line for line in lines[:2] if f"source={topic}:0:1  " in line]
        bad, lost = (int(line.split()[0].split(":")[1]) for line in (malformed, refused))
        assert {bad, lost} == {0, 1}
        assert malformed.startswith(f"0:{bad}  source={topic}:0:0  room=-  event=-  ")
        assert "redrive=-" in malformed and "reason=not JSON" in malformed
        assert refused.startswith(f"0:{lost}  source={topic}:0:1  room={room_id}  event=message.created  ")
        assert "redrive=-" in refused and "reason=refused by the database" in refused
        assert "2 dead letters of 2 in the topic" in out
        assert any(line.strip().startswith("1  not JSON") for line in lines)
        assert any(line.strip().startswith("1  refused by the database") for line in lines)

        code, out, _ = deadletters("list", "--topic", topic, "--reason", "NOT json", "--limit", "0")
        assert code == 0 and "1 dead letter of 2 in the topic, 0 shown" in out
        assert "0 dead letters of 2" in deadletters("list", "--topic", topic, "--since", "2999-01-01")[1]
        assert "2 dead letters of 2" in deadletters("list", "--topic", topic, "--since", "1h")[1]

        # show: headers and the value pretty-printed, by PARTITION:OFFSET or, one partition, OFFSET.
        code, out, err = deadletters("show", "--topic", topic, f"0:{lost}")
        assert code == 0, err
        assert f"source: {topic}:0:1" in out and "reason: refused by the database" in out
        assert f'\n  "room_id": {room_id},\n' in out and '"rev": 1' in out and "ledger: never re-driven" in out
        assert deadletters("show", "--topic", topic, str(lost))[1].splitlines()[1:] == out.splitlines()[1:]
        assert "(not JSON, 9 bytes) b'{not json'" in deadletters("show", "--topic", topic, str(bad))[1]
        code, _, err = deadletters("show", "--topic", topic, "0:7")
        assert code == 2 and "no record at 0:7" in err

        # redrive while the room is still missing: both fail, each reported, exit 1.
        code, out, err = deadletters("redrive", "--topic", topic)
        assert code == 1, out + err
        assert f"0:{bad} ({topic}:0:0) failed: undecodable: not JSON" in err
        assert f"0:{lost} ({topic}:0:1) failed: refused by the database" in err
        assert "2 read: 0 applied (0 new rows), 0 already applied, 2 failed, 0 skipped by filter" in out
        assert ledger(topic) == {bad: ("failed", 1), lost: ("failed", 1)}
        assert not Message.objects.filter(room_id=room_id).exists()

        # The fix: the room exists again.
        Room.objects.create(id=room_id, slug=unique("restored"), name="restored", owner=author)

        # A dry run says what it would re-drive and writes nothing, to the ledger neither.
        code, out, err = deadletters("redrive", "--topic", topic, "--dry-run", "--reason", "refused")
        assert code == 0, out + err
        assert f"0:{lost} ({topic}:0:1) would re-drive: message.created {orphan['id']} in room {room_id}" in out
        assert "dry run: 2 read: 1 would be re-driven, 0 already applied, 0 failed, 1 skipped by filter" in out
        code, out, err = deadletters("redrive", "--topic", topic, "--dry-run")
        assert code == 1 and "undecodable: not JSON" in err and "1 would be re-driven" in out
        assert ledger(topic) == {bad: ("failed", 1), lost: ("failed", 1)}
        assert not Message.objects.filter(room_id=room_id).exists()

        # redrive: the malformed one fails again, and the other is applied all the same.
        code, out, err = deadletters("redrive", "--topic", topic, "-v", "2")
        assert code == 1, out + err
        assert f"0:{lost} ({topic}:0:1) applied: 1 new row" in out
        assert "2 read: 1 applied (1 new row), 0 already applied, 1 failed, 0 skipped by filter" in out
        assert ledger(topic) == {bad: ("failed", 2), lost: ("applied", 2)}
        stored = Message.objects.get(room_id=room_id)
        assert str(stored.id) == orphan["id"] and stored.body == orphan["body"] and stored.author_id == author.id

        # Again: the applied one is skipped, never re-driven twice; still one message.
        code, out, err = deadletters("redrive", "--topic", topic)
        assert code == 1
        assert "2 read: 0 applied (0 new rows), 1 already applied, 1 failed, 0 skipped by filter" in out
        assert ledger(topic) == {bad: ("failed", 3), lost: ("applied", 2)}
        assert Message.objects.filter(room_id=room_id).count() == 1
        # Nothing failing among those chosen: exit 0.
        code, out, err = deadletters("redrive", "--topic", topic, "--reason", "refused")
        assert code == 0, out + err
        assert "2 read: 0 applied (0 new rows), 1 already applied, 0 failed, 1 skipped by filter" in out
        assert Message.objects.filter(room_id=room_id).count() == 1

        lines = deadletters("list", "--topic", topic)[1].splitlines()
        assert "redrive=failed" in lines[bad] and "redrive=applied" in lines[lost]
        assert "ledger: applied after 2 attempt(s)" in deadletters("show", "--topic", topic, f"0:{lost}")[1]
    finally:
        DeadLetterRedrive.objects.filter(topic=dead_letter_topic(topic)).delete()


def test_every_partition_is_read_and_re_driven_with_progress(monkeypatch):
    topic = unique_topic("redrive-partitions")
    ensure_topics(topic=topic, partitions=3)
    author = make_user("author")
    room_ids = random.sample(range(2**40, 2**40 + 2**20), 12)  # keys spread over the three partitions
    batch = [message_created(room_id, author, 1) for room_id in room_ids]
    produce(topic, [(records.record_key(r), records.encode(r)) for r in batch])
    worker = run_worker(topic, unique("group"), unique("wredrive-parts"))
    assert worker.proc.wait(60) == 0, worker.log()
    try:
        code, out, err = deadletters("list", "--topic", topic)
        assert code == 0, err
        lines = out.splitlines()[:12]
        assert "12 dead letters of 12 in the topic" in out
        # Each went to the partition of the dead-letter topic its record came from.
        places = [(line.split(":", 1)[0], line.split("source=", 1)[1].split()[0].rsplit(":", 2)[1]) for line in lines]
        assert all(dead == source for dead, source in places) and len({dead for dead, _ in places}) > 1
        code, _, err = deadletters("show", "--topic", topic, "0")
        assert code == 2 and "has 3 partitions: give PARTITION:OFFSET" in err

        for room_id in room_ids:
            Room.objects.create(id=room_id, slug=unique("restored"), name="restored", owner=author)
        monkeypatch.setattr(deadletters_command, "PROGRESS_RECORDS", 5)
        code, out, err = deadletters("redrive", "--topic", topic)
        assert code == 0, out + err
        assert "... 5 read so far, 0 failed" in out and "... 10 read so far, 0 failed" in out
        assert "12 read: 12 applied (12 new rows), 0 already applied, 0 failed, 0 skipped by filter" in out
        assert Message.objects.filter(room_id__in=room_ids).count() == 12
        assert {outcome for outcome, _ in ledger(topic).values()} == {"applied"}
    finally:
        DeadLetterRedrive.objects.filter(topic=dead_letter_topic(topic)).delete()


def test_a_re_driven_record_older_than_the_stored_message_changes_nothing():
    """Contract §8: a record applies only when its rev is newer than the stored one, re-driven too."""
    topic = unique_topic("redrive-late")
    ensure_topics(topic=topic, partitions=1)
    author = make_user("author")
    room = make_room(author)
    created = message_created(room.id, author, 1)
    first_edit = {**created, "event": "message.edited", "body": "first edit", "rev": 2,
                  "edited_at": timezone.now().isoformat()}
    second_edit = {**created, "event": "message.edited", "body": "second edit", "rev": 3,
                   "edited_at": timezone.now().isoformat()}
    messages_persist([records.decode(records.encode(created))])
    messages_persist([records.decode(records.encode(second_edit))])
    # The first edit, dead-lettered late by the worker's own writer (a database refusal since mended).
    letters = DeadLetters(topic)
    try:
        for offset, record in enumerate([created, first_edit]):
            refused = SimpleNamespace(topic=topic, partition=0, offset=offset, key=records.record_key(record),
                                      value=records.encode(record))
            letters.send(refused, "refused by the database: (a test)", stopping=lambda: False)
    finally:
        letters.close()
    try:
        code, out, err = deadletters("redrive", "--topic", topic, "-v", "2")
        assert code == 0, out + err
        assert "2 read: 2 applied (0 new rows), 0 already applied, 0 failed, 0 skipped by filter" in out
        stored = Message.objects.get(id=created["id"])
        assert (stored.body, stored.rev) == ("second edit", 3)
    finally:
        DeadLetterRedrive.objects.filter(topic=dead_letter_topic(topic)).delete()


def test_an_unknown_topic_and_kafka_unreachable_are_clear_errors_not_hangs():
    code, _, err = deadletters("list", "--topic", unique_topic("never-made"))
    assert code == 2 and "no topic" in err and "never-made" in err
    with override_settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"):
        for args in (["list"], ["show", "0:0"], ["redrive"]):
            started = time.monotonic()
            code, _, err = deadletters(*args, "--timeout", "2")
            assert code == 2 and "Kafka did not answer within 2 s" in err, err
            assert time.monotonic() - started < 15
