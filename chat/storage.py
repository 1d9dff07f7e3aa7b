"""Message rows into the database in bulk: the worker's write path (chat.services.persistence.messages_persist).

On Postgres a batch is one INSERT from one array literal per column (no Model instances, no
per-value adaptation), and the rows' room and author are checked once per batch rather than once
per row. SQLite (the embedded default) goes through bulk_create.
"""

import contextlib
import functools
import logging

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction

from chat.bus import records
from chat.models import Message, Room

logger = logging.getLogger(__name__)


def rows_insert(rows: list[tuple], *, all_new: bool) -> int:
    """Insert message rows (values of records.ROW_FIELDS), skipping any that conflict with a stored
    row (by id, by (room, seq) or by client_id; within the batch the first wins). Returns how many
    were new. `all_new`: the rows come from message.created records, so a conflict is rare (a replay,
    a redelivered record) and the INSERT first runs without conflict handling."""
    if connection.vendor != "postgresql":
        return _rows_insert_orm(rows)
    params = [array(values) for array, values in zip(_ARRAY_LITERALS, zip(*rows, strict=True), strict=True)]
    with connection.cursor() as cursor:
        if all_new:
            # ON CONFLICT probes every unique index before each row goes in, a fifth of Postgres's
            # work per row; a plain INSERT finds a conflict anyway, and the savepoint undoes it.
            try:
                with transaction.atomic():
                    cursor.execute(_insert_sql(skip_conflicts=False), params)
                    return cursor.rowcount
            except IntegrityError:
                pass
        cursor.execute(_insert_sql(skip_conflicts=True), params)
        return cursor.rowcount  # the rows inserted; those skipped on a conflict do not count


@contextlib.contextmanager
def references_checked_once(rows: list[tuple]):
    """Around the INSERT of `rows`: make sure every row's room and author exist and stay until the
    transaction ends, checked once per batch.

    Postgres checks a foreign key row by row (a query each, at commit: a fifth of the write). Where
    the role may, the INSERT instead runs with those per-row triggers off (session_replication_role
    = replica, as logical replication applies rows checked upstream), after taking the lock each
    check would take, FOR KEY SHARE, on each distinct room and author at once. A room or user deleted
    concurrently then behaves as with the per-row checks: their DELETE waits for this transaction,
    and their own foreign-key check fails on the rows it added. Raises IntegrityError naming what
    is missing. Elsewhere the per-row checks run as usual. Must run inside a transaction."""
    if not batch_reference_checks():
        yield
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model, field in ((Room, "room"), (get_user_model(), "author")):
            column = records.ROW_FIELDS.index(field)
            wanted = sorted({row[column] for row in rows})
            pk, table = quote(model._meta.pk.column), quote(model._meta.db_table)
            cursor.execute(f"SELECT {pk} FROM {table} WHERE {pk} = ANY(%s) ORDER BY 1 FOR KEY SHARE", [wanted])
            missing = set(wanted) - {found for (found,) in cursor.fetchall()}
            if missing:
                raise IntegrityError(f"no {model._meta.model_name} with id {', '.join(map(str, sorted(missing)))}")
        cursor.execute("SET LOCAL session_replication_role = replica")
        yield
        # Only for these rows: anything else the caller's transaction writes is checked as usual.
        cursor.execute("SET LOCAL session_replication_role = origin")


@functools.cache
def batch_reference_checks() -> bool:
    """Whether references_checked_once replaces the per-row foreign-key checks: on Postgres 15+ for a role
    granted SET on session_replication_role (scripts/services.sh grants it; docs/deployment.md)."""
    if connection.vendor != "postgresql" or connection.pg_version < 150000:
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
        permitted = cursor.fetchone()[0]
    if not permitted:
        logger.warning("foreign keys are checked row by row: GRANT SET ON PARAMETER session_replication_role "
                       "to this database role for one check per batch")
    return permitted


# The full-text index on message bodies (migration 0004).
SEARCH_INDEX = "chat_message_body_search"


def search_index_tidy() -> int:
    """Merge the search index's pending entries into the index proper; returns the pages of pending
    entries there were.

    A GIN index takes new entries into a pending list, cheaply; whichever insert finds the list
    over gin_pending_list_limit (4 MB) merges it, which a batch's writer would otherwise pay for
    (a tenth of Postgres's work per row, all in one batch now and then). The worker calls this
    from a thread of its own after each stored batch, so the merge runs beside the writers and
    searches find a short pending list."""
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [SEARCH_INDEX])
        return cursor.fetchone()[0]


def _rows_insert_orm(rows: list[tuple]) -> int:
    """The same through bulk_create, for the embedded default's SQLite (one record at a time)."""
    names = [Message._meta.get_field(name).attname for name in records.ROW_FIELDS]
    messages = [Message(**dict(zip(names, row, strict=True))) for row in rows]
    ids = {message.id for message in messages}
    before = Message.objects.filter(id__in=ids).count()
    Message.objects.bulk_create(messages, ignore_conflicts=True)
    return Message.objects.filter(id__in=ids).count() - before


def _text_array(values) -> str:
    """A Postgres array literal of strings (None: NULL); every element quoted, so "NULL", "" or
    text with commas, braces or spaces stays itself."""
    return "{" + ",".join(
        "NULL" if value is None else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for value in values
    ) + "}"


def _plain_array(values) -> str:
    """An array literal of values whose str() needs no quoting: ints and canonical UUIDs."""
    return "{" + ",".join(map(str, values)) + "}"


def _time_array(values) -> str:
    return "{" + ",".join("NULL" if value is None else value.isoformat() for value in values) + "}"


def _bool_array(values) -> str:
    return "{" + ",".join("t" if value else "f" for value in values) + "}"


# One per records.ROW_FIELDS: id, room, seq, author, body, created_at, edited_at, hidden, deleted, client_id.
_ARRAY_LITERALS = (_plain_array, _plain_array, _plain_array, _plain_array, _text_array, _time_array, _time_array,
                   _bool_array, _bool_array, _text_array)


@functools.cache
def _insert_sql(*, skip_conflicts: bool) -> str:
    """INSERT INTO message (...) SELECT * FROM unnest(%s::type[], ...) [ON CONFLICT DO NOTHING], with
    the table, columns and types from Message._meta (a varchar's length is left to the column, so a
    too-long value is refused rather than cut)."""
    quote = connection.ops.quote_name
    fields = [Message._meta.get_field(name) for name in records.ROW_FIELDS]
    types = [field.db_type(connection).split("(")[0] for field in fields]
    return (
        f"INSERT INTO {quote(Message._meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"SELECT * FROM unnest({', '.join(f'%s::{db_type}[]' for db_type in types)})"
        + (" ON CONFLICT DO NOTHING" if skip_conflicts else "")
    )
