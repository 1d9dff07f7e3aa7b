"""The worker's bulk write against the real Postgres: replays store nothing twice, a different
message is never dropped for a taken seq or client_id, and a batch's rooms and authors are checked
once per batch without letting a concurrent delete leave orphans."""

import contextlib
import logging
import threading
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from chat import storage
from chat.bus import records
from chat.models import Message, Room
from chat.services.persistence import messages_persist
from tests.conftest import make_room, make_user
from tests.support import wait_until


def created(room, author, seq: int, *, client_id: str | None = None, event: str = "message.created") -> dict:
    """A decoded record (message.created unless told), as the worker hands it to messages_persist;
    each with a client_id of its own unless told."""
    message = {"id": str(uuid.uuid4()), "room": room.slug, "seq": seq,
               "author": {"id": author.id, "username": author.username}, "body": f"body {seq}",
               "created_at": timezone.now().isoformat(), "edited_at": None,
               "client_id": client_id or f"client-{uuid.uuid4().hex[:12]}"}
    return records.decode(records.encode(records.message_record(event, message, room_id=room.id)))


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def stored_seqs(room) -> dict[str, int]:
    return {str(ident): seq for ident, seq in Message.objects.filter(room=room).values_list("id", "seq")}


def lock_waiters() -> int:
    """Backends of this database waiting for a row lock (tests' own connections included)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def in_thread(target) -> tuple[threading.Thread, dict]:
    """Run target in a thread of its own (its own database connection); the result dict gets its
    return value or exception."""
    result = {}

    def run():
        try:
            result["value"] = target()
        except Exception as exc:
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_the_test_stack_checks_references_once_per_batch():
    # scripts/services.sh grants the role SET on session_replication_role; without it the tests
    # below would pass on Postgres's per-row checks and prove nothing about the per-batch ones.
    assert storage.batch_reference_checks()


def test_a_replayed_batch_of_creates_stores_each_message_once():
    author = make_user("author")
    room = make_room(author)
    first = [created(room, author, seq) for seq in (1, 2)]
    assert messages_persist(first) == 2
    replay = [*first, created(room, author, 3)]  # a redelivered batch that grew by one
    assert messages_persist(replay) == 1
    assert messages_persist(replay) == 0
    assert sorted(Message.objects.filter(room=room).values_list("seq", flat=True)) == [1, 2, 3]


def test_a_different_message_with_a_taken_seq_is_stored_above_the_rooms_highest_logged_and_counted(caplog):
    # After a Redis failover the promoted replica may hand out a seq already used: both messages
    # were acked, so both must be kept.
    author = make_user("author")
    room = make_room(author)
    first = [created(room, author, seq) for seq in (1, 2, 3)]
    messages_persist(first)
    twin, next_one = created(room, author, 2), created(room, author, 4)
    before = counted("chat_worker_seq_reassigned_total")
    with caplog.at_level(logging.WARNING, logger="chat.services.persistence"):
        assert messages_persist([twin, next_one]) == 2
    # Above the room's highest, stored or in the batch, so the batch's seq 4 keeps its own.
    assert stored_seqs(room) == {**{r["id"]: r["seq"] for r in first}, twin["id"]: 5, next_one["id"]: 4}
    assert counted("chat_worker_seq_reassigned_total") == before + 1
    assert f"seq 2 of message {twin['id']} was already message {first[1]['id']}" in caplog.text
    assert "stored as seq 5" in caplog.text
    # Its record delivered again (a replay) is that message again: nothing new, nothing counted.
    assert messages_persist([twin]) == 0
    assert stored_seqs(room)[twin["id"]] == 5
    assert counted("chat_worker_seq_reassigned_total") == before + 1


def test_two_messages_with_one_seq_in_one_batch_are_both_kept():
    author = make_user("author")
    room = make_room(author)
    one, other = created(room, author, 1), created(room, author, 1)
    assert messages_persist([one, other, one]) == 2
    assert stored_seqs(room) == {one["id"]: 1, other["id"]: 2}


def test_a_batch_with_changes_keeps_a_different_message_with_a_taken_seq():
    # A batch that is not all creates skips the plain INSERT: the same rule on the other path.
    author = make_user("author")
    room = make_room(author)
    stored = created(room, author, 1)
    messages_persist([stored])
    edit = {**stored, "event": "message.edited", "body": "edited", "edited_at": timezone.now(), "rev": 2}
    twin = created(room, author, 1)
    assert messages_persist([edit, twin]) == 1
    assert stored_seqs(room) == {stored["id"]: 1, twin["id"]: 2}
    assert Message.objects.get(id=stored["id"]).body == "edited"


def test_a_second_id_for_one_client_id_is_a_resend_the_first_stands_counted_and_logged(caplog):
    author = make_user("author")
    room = make_room(author)
    first = created(room, author, 1, client_id="retry-me")
    messages_persist([first])
    # The same send again under another id (Redis forgot the client_id), and twice in one batch.
    again, within_one = created(room, author, 7, client_id="retry-me"), created(room, author, 8, client_id="once")
    within_two = created(room, author, 9, client_id="once")
    before = counted("chat_worker_resends_total")
    with caplog.at_level(logging.WARNING, logger="chat.services.persistence"):
        assert messages_persist([again, within_one, within_two]) == 1
    assert stored_seqs(room) == {first["id"]: 1, within_one["id"]: 8}
    assert counted("chat_worker_resends_total") == before + 2
    assert f"message {again['id']} re-sends client_id 'retry-me' of message {first['id']}" in caplog.text
    assert f"message {within_two['id']} re-sends client_id 'once' of message {within_one['id']}" in caplog.text


@pytest.mark.parametrize("missing", ["room", "author"])
def test_a_batch_with_a_row_of_a_missing_room_or_author_is_refused_whole(missing):
    author = make_user("author")
    room = make_room(author)
    bad = created(room, author, 2)
    if missing == "room":
        bad["room_id"] = 10**15
    else:
        bad["author"]["id"] = 2**31 - 1
    expected = f"no room with id {10**15}" if missing == "room" else f"no user with id {2**31 - 1}"
    with pytest.raises(IntegrityError, match=expected):
        messages_persist([created(room, author, 1), bad])
    assert not Message.objects.filter(room=room).exists()


@contextlib.contextmanager
def held_open(action):
    """Runs `action` in a transaction in a thread of its own and keeps that transaction open until
    the block ends; then lets it commit."""
    done, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            action()
            done.set()
            assert release.wait(30)

    thread, result = in_thread(hold)
    wait_until(lambda: done.is_set() or "error" in result, 30, message="the transaction's work done")
    assert "error" not in result, result
    try:
        yield
    finally:
        release.set()
        thread.join(30)


def test_a_room_deleted_while_its_batch_is_written_waits_and_then_fails_leaving_no_orphans():
    author = make_user("author")
    room = make_room(author)
    with held_open(lambda: messages_persist([created(room, author, seq) for seq in (1, 2, 3)])):
        waiting_before = lock_waiters()
        deleter, deleted = in_thread(lambda: Room.objects.filter(id=room.id).delete())
        # The batch holds its room: the delete waits for the batch's transaction...
        wait_until(lambda: lock_waiters() > waiting_before, 10, message="the delete waiting for the batch")
    deleter.join(30)
    # ...and then fails on the rows the batch added, as with Postgres's own per-row checks.
    assert isinstance(deleted.get("error"), IntegrityError), deleted
    assert Room.objects.filter(id=room.id).exists()
    assert Message.objects.filter(room_id=room.id).count() == 3


def test_a_batch_for_a_room_being_deleted_waits_and_is_refused_once_the_delete_commits():
    author = make_user("author")
    room = make_room(author)
    with held_open(lambda: Room.objects.filter(id=room.id).delete()):
        waiting_before = lock_waiters()
        writer, written = in_thread(lambda: messages_persist([created(room, author, 1)]))
        wait_until(lambda: lock_waiters() > waiting_before, 10, message="the batch waiting for the delete")
    writer.join(30)
    assert isinstance(written.get("error"), IntegrityError), written
    assert "no room with id" in str(written["error"])
    assert not Room.objects.filter(id=room.id).exists()
    assert not Message.objects.filter(room_id=room.id).exists()


def test_the_rest_of_a_callers_transaction_keeps_its_per_row_foreign_key_checks():
    author = make_user("author")
    room = make_room(author)
    with transaction.atomic():
        messages_persist([created(room, author, 1)])
        with connection.cursor() as cursor:
            cursor.execute("SHOW session_replication_role")
            assert cursor.fetchone()[0] == "origin"
    assert Message.objects.filter(room=room).count() == 1


def test_a_row_written_by_the_release_before_rich_messages_gets_their_defaults():
    """During a rolling deploy, a worker of the release before migration 0014 inserts rows without
    rev, reactions and attachments: the database fills them in (db_default)."""
    author = make_user("author")
    room = make_room(author)
    ident = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO chat_message (id, room_id, seq, author_id, body, created_at, hidden, deleted) "
                       "VALUES (%s, %s, 1, %s, 'old release', %s, false, false)",
                       [ident, room.id, author.id, timezone.now()])
    stored = Message.objects.get(id=ident)
    assert (stored.rev, stored.reactions, stored.attachments, stored.reply_to) == (1, [], [], None)
