"""Retention against the real Postgres and Kafka: prune_messages deletes exactly each room's messages
past its retention (the room's own or the global), with their attachments, reports and mentions,
in batches, once at a time; and the worker never brings a pruned message back from a replay."""

import io
import logging
import re
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from chat import protocol
from chat.bus import records
from chat.bus.topics import ensure_topics
from chat.models import Attachment, Mention, Message, ModerationAction, Report
from chat.selectors import messages_search
from chat.services.persistence import messages_persist
from chat.services.retention import PRUNE_LOCK_KEY, retention_cache_clear
from tests.conftest import child_env, make_room, make_user
from tests.integration.test_access_end import FormFields
from tests.integration.test_worker import produce
from tests.support import PYTHON, ROOT, Process, unique, unique_topic

RETENTION_DAYS = 30  # the global in these tests; rooms may have their own


@pytest.fixture(autouse=True)
def retention():
    """The global retention, and no rooms' own retention cached from before."""
    retention_cache_clear()
    with override_settings(CHAT_RETENTION_DAYS=RETENTION_DAYS):
        yield
    retention_cache_clear()


def store(room, author, ages: list[float]) -> list[Message]:
    """Messages as the worker would have stored them, `ages` days old in seq order (oldest first),
    each with a word of its own to search for."""
    now = timezone.now()
    return Message.objects.bulk_create([
        Message(room=room, seq=seq, author=author, body=f"kept w{uuid.uuid4().hex[:12]}",
                created_at=now - timedelta(days=age))
        for seq, age in enumerate(ages, 1)])


def ids(messages) -> set[str]:
    return {str(message.pk) for message in messages}


def stored_ids(room) -> set[str]:
    return {str(ident) for ident in Message.objects.filter(room=room).values_list("pk", flat=True)}


def word(message: Message) -> str:
    return message.body.split()[1]


def prune(*options: str) -> str:
    out = io.StringIO()
    call_command("prune_messages", *options, stdout=out)
    return out.getvalue()


def attach(room, message: Message, media: Path) -> Attachment:
    """An attachment claimed by `message`, with a file and a thumbnail in the storage."""
    attachment = Attachment(room=room, uploader=message.author, name="notes.txt", size=5, content_type="text/plain",
                            message_id=message.pk)
    attachment.file.save("original", ContentFile(b"notes"), save=False)
    attachment.thumbnail.save("thumb.webp", ContentFile(b"thumb"), save=False)
    attachment.save(force_insert=True)
    assert (media / attachment.file.name).exists() and (media / attachment.thumbnail.name).exists()
    return attachment


def test_prune_deletes_exactly_each_rooms_messages_past_its_retention_in_batches(tmp_path):
    author = make_user("author")
    plain, short, long, forever = (make_room(author) for _ in range(4))
    short.retention_days, long.retention_days, forever.retention_days = 7, 365, 0
    for room in (short, long, forever):
        room.save(update_fields=["retention_days"])
    messages = {
        plain: store(plain, author, [90, 60, 31, 29, 1, 0]),  # the global 30 days: the first three go
        short: store(short, author, [40, 20, 8, 6, 0.5]),  # its own 7, shorter: three go
        long: store(long, author, [400, 100, 40, 1]),  # its own 365, longer: one goes
        forever: store(forever, author, [1000, 2]),  # its own 0: none goes
    }
    past = {plain: 3, short: 3, long: 1, forever: 0}
    pruned = {room: messages[room][:count] for room, count in past.items()}
    kept = {room: messages[room][count:] for room, count in past.items()}
    old, young = messages[plain][0], messages[plain][4]
    moderator = make_user("moderator", is_staff=True)
    report = Report.objects.create(message=old, reporter=moderator, reason="spam")
    action = ModerationAction.objects.create(actor=moderator, action="hide", target_user=author, target_message=old)
    mention = Mention.objects.create(message=old, user=moderator, room=plain, seq=old.seq)
    with override_settings(MEDIA_ROOT=str(tmp_path)):
        gone_file, kept_file = attach(plain, old, tmp_path), attach(plain, young, tmp_path)

        # A dry run counts, per room, and deletes nothing.
        out = prune("--dry-run")
        for room, count in past.items():
            line = f"room {room.slug}: would delete {count} messages, {1 if room is plain else 0} attachments"
            assert (line in out) == (count > 0), out
        assert "nothing deleted" in out
        assert all(stored_ids(room) == ids(messages[room]) for room in messages)

        # Two messages a batch: every one past retention still goes, with a progress line per batch.
        out = prune("--batch-size", "2", "--sleep", "0")
    for room in messages:
        assert stored_ids(room) == ids(kept[room]), room
        assert not Message.objects.filter(pk__in=[m.pk for m in pruned[room]]).exists()
    progress = [line for line in out.splitlines() if line.startswith(f"room {plain.slug}: ")]
    assert progress[:2] == [f"room {plain.slug}: 2 messages deleted so far",
                            f"room {plain.slug}: 3 messages deleted so far"], out
    assert len(progress) == 3 and progress[2].startswith(f"room {plain.slug}: deleted 3 messages, 1 attachments "
                                                         "(created before ")
    assert progress[2].endswith(f" UTC: {RETENTION_DAYS} days)")
    assert f"room {short.slug}: deleted 3 messages, 0 attachments" in out and ": 7 days)" in out
    assert f"room {long.slug}: deleted 1 messages" in out and f"room {forever.slug}:" not in out
    assert re.search(r"^deleted \d+ messages and \d+ attachments in \d+ rooms", out, re.MULTILINE), out

    # What hung on a pruned message: its report and mention go, the moderation log keeps its entry.
    assert not Report.objects.filter(pk=report.pk).exists()
    assert not Mention.objects.filter(pk=mention.pk).exists()
    action.refresh_from_db()
    assert action.target_message_id is None
    # Its attachment's files and row go; the kept message's stay.
    assert not Attachment.objects.filter(pk=gone_file.pk).exists()
    assert not (tmp_path / gone_file.file.name).exists() and not (tmp_path / gone_file.thumbnail.name).exists()
    assert Attachment.objects.filter(pk=kept_file.pk).exists() and (tmp_path / kept_file.file.name).exists()

    # Search finds what is kept and nothing pruned.
    for room in messages:
        for message in kept[room]:
            assert [m["id"] for m in messages_search(author, query=word(message), room_slug=room.slug, limit=5)] \
                == [str(message.pk)]
        for message in pruned[room]:
            assert messages_search(author, query=word(message), room_slug=None, limit=5) == []
    assert {m["id"] for m in messages_search(author, query="kept", room_slug=plain.slug, limit=50)} \
        == ids(kept[plain])

    # A second run finds nothing more of these rooms.
    out = prune("--room", plain.slug)
    assert f"room {plain.slug}:" not in out and "deleted 0 messages" in out


def test_a_run_while_another_holds_the_lock_does_nothing_and_succeeds():
    author = make_user("author")
    room = make_room(author)
    store(room, author, [90, 1])
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [PRUNE_LOCK_KEY])
        out = prune("--room", room.slug)
        assert "another prune_messages run holds the lock: nothing done" in out
        assert Message.objects.filter(room=room).count() == 2
    finally:
        other.close()  # and the lock with its session
    assert "deleted 1 messages" in prune("--room", room.slug)
    assert Message.objects.filter(room=room).count() == 1


def test_an_unknown_room_fails_and_help_explains_the_command():
    with pytest.raises(CommandError, match="no room 'no-such-room'"):
        prune("--room", "no-such-room")
    failed = subprocess.run([PYTHON, "manage.py", "prune_messages", "--room", "no-such-room"], cwd=ROOT,
                            env=child_env(), capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 1 and "no room 'no-such-room'" in failed.stderr
    shown = subprocess.run([PYTHON, "manage.py", "prune_messages", "--help"], cwd=ROOT, env=child_env(),
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0
    assert all(part in shown.stdout for part in ("CHAT_RETENTION_DAYS", "--dry-run", "--batch-size", "--sleep",
                                                 "--room"))


def test_the_room_admin_shows_explains_and_saves_a_rooms_retention():
    staff = make_user("staff", is_staff=True, is_superuser=True)
    own, plain = make_room(staff), make_room(staff)
    own.retention_days = 7
    own.save(update_fields=["retention_days"])
    client = Client(HTTP_HOST="localhost")
    client.force_login(staff)
    assert "<td class=\"field-retention\">7 days</td>" in client.get("/admin/chat/room/", {"q": own.slug}).text
    assert f"<td class=\"field-retention\">global ({RETENTION_DAYS} days)</td>" \
        in client.get("/admin/chat/room/", {"q": plain.slug}).text
    page = client.get(f"/admin/chat/room/{plain.pk}/change/")
    assert page.status_code == 200
    assert f"now: {RETENTION_DAYS} days); empty: the global; 0: for ever" in page.text
    form = FormFields()
    form.feed(page.text)
    fields = {name: value for name, value in form.fields.items() if "__prefix__" not in name}
    assert fields["retention_days"] == ""
    saved = client.post(f"/admin/chat/room/{plain.pk}/change/", data={**fields, "retention_days": "90"})
    assert saved.status_code == 302, saved.text[:2000]
    plain.refresh_from_db()
    assert plain.retention_days == 90


def created_record(message: Message, event: str = "message.created", **changes) -> dict:
    """The record the web instance produced for `message` (as stored), as it sits in Kafka."""
    obj = {"id": str(message.pk), "room": message.room.slug, "seq": message.seq,
           "author": {"id": message.author_id, "username": message.author.username}, "body": message.body,
           "created_at": protocol.isoformat(message.created_at), "edited_at": None, "client_id": None, "rev": 1,
           **changes}
    return records.message_record(event, obj, room_id=message.room_id)


def past_retention_logged(log: str) -> int:
    return sum(int(count) for count in re.findall(r"(\d+) records past their room's retention not applied", log))


def test_the_worker_does_not_bring_pruned_messages_back_from_a_replay():
    author = make_user("author")
    plain, short = make_room(author), make_room(author)
    short.retention_days = 7
    short.save(update_fields=["retention_days"])
    old_plain = store(plain, author, [90, 60, 20, 1])
    old_short = store(short, author, [40, 8, 6])
    prune("--sleep", "0")
    pruned = old_plain[:2] + old_short[:2]
    assert stored_ids(plain) == ids(old_plain[2:]) and stored_ids(short) == ids(old_short[2:])

    # The topic replayed: every pruned message's create, an edit of one, and a message still within
    # retention (its create was lost, say) that must still be stored.
    within = Message(pk=uuid.uuid4(), room=plain, seq=10, author=author, body="within retention",
                     created_at=timezone.now() - timedelta(days=20))
    replay = [created_record(message) for message in pruned]
    replay.append(created_record(pruned[0], "message.edited", body="edited late", rev=2,
                                 edited_at=protocol.isoformat(timezone.now())))
    replay.append(created_record(within))
    topic = unique_topic("retention")
    ensure_topics(topic=topic, partitions=1)
    produce(topic, [(records.record_key(record), records.encode(record)) for record in replay])
    worker = Process(unique("wretention"), [PYTHON, "manage.py", "consume_messages", "--topic", topic, "--group",
                                            unique("group"), "--idle-exit", "4", "--progress-every", "1"],
                     child_env(CHAT_RETENTION_DAYS=str(RETENTION_DAYS))).start()
    assert worker.proc.wait(90) == 0, worker.log()
    assert not Message.objects.filter(pk__in=[m.pk for m in pruned]).exists()
    assert stored_ids(plain) == ids(old_plain[2:]) | {str(within.pk)}
    assert stored_ids(short) == ids(old_short[2:])
    assert past_retention_logged(worker.log()) == len(pruned) + 1, worker.log()


def test_messages_persist_counts_and_logs_records_past_retention_once_per_batch(caplog):
    author = make_user("author")
    room = make_room(author)
    room.retention_days = 3
    room.save(update_fields=["retention_days"])
    now = timezone.now()
    old = [Message(pk=uuid.uuid4(), room=room, seq=seq, author=author, body="old", created_at=now - timedelta(days=4))
           for seq in (1, 2)]
    young = Message(pk=uuid.uuid4(), room=room, seq=3, author=author, body="young", created_at=now - timedelta(days=2))
    batch = [records.decode(records.encode(created_record(message))) for message in (*old, young)]
    before = REGISTRY.get_sample_value("chat_worker_records_past_retention_total") or 0
    with caplog.at_level(logging.WARNING, logger="chat.services.retention"):
        assert messages_persist(batch) == 1
    assert REGISTRY.get_sample_value("chat_worker_records_past_retention_total") == before + 2
    lines = [r.getMessage() for r in caplog.records if "past their room's retention" in r.getMessage()]
    assert lines == [f"2 records past their room's retention not applied (a replay of pruned messages?): "
                     f"room {room.pk}: 2"]
    assert stored_ids(room) == {str(young.pk)}
