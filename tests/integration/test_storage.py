"""The worker's bulk write against the real Postgres: replays store nothing twice, and a batch's
rooms and authors are checked once per batch without letting a concurrent delete leave orphans."""

import contextlib
import threading
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from chat import storage
from chat.bus import records
from chat.models import Message, Room
from chat.services.persistence import messages_persist
from tests.conftest import make_room, make_user
from tests.support import wait_until


def created(room, author, seq: int) -> dict:
    """A decoded message.created record, as the worker hands it to messages_persist."""
    message = {"id": str(uuid.uuid4()), "room": room.slug, "seq": seq,
               "author": {"id": author.id, "username": author.username}, "body": f"body {seq}",
               "created_at": timezone.now().isoformat(), "edited_at": None, "client_id": f"client-{seq}"}
    return records.decode(records.encode(records.message_record("message.created", message, room_id=room.id)))


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
