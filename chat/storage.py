"""Message rows into the database in bulk: the worker's write path (chat.services.persistence.messages_persist).

On Postgres a batch is one INSERT from one array literal per column (no Model instances, no
per-value adaptation), and the rows' room and author are checked once per batch rather than once
per row. A batch that meets stored rows is sorted out row by row, so a different message is never
dropped for holding a taken (room, seq). SQLite (the embedded default) goes through the ORM.
"""

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q

from chat.bus import records
from chat.models import Message, Room

logger = logging.getLogger(__name__)

# Positions in a row (records.ROW_FIELDS).
_ID, _ROOM, _SEQ, _AUTHOR, _CLIENT_ID = map(records.ROW_FIELDS.index, ("id", "room", "seq", "author", "client_id"))
# Tries of the checked write: each retry follows a concurrent writer storing a row in the way.
_CHECKED_TRIES = 3


@dataclass(frozen=True)
class Renumbered:
    """An acked message whose (room, seq) another message (`holder`) had: stored under `seq`, not `was`."""

    id: str
    room: int
    was: int
    seq: int
    holder: str


@dataclass(frozen=True)
class Resent:
    """A second id for one (author, room, client_id): the same message sent again, not stored; `kept` stands."""

    id: str
    room: int
    client_id: str
    kept: str


@dataclass
class Written:
    """What rows_insert did: rows new, and the rows it stored under a new seq or left out as re-sends."""

    new: int = 0
    renumbered: list[Renumbered] = field(default_factory=list)
    resent: list[Resent] = field(default_factory=list)


class _Stored(NamedTuple):
    id: str
    room: int
    seq: int
    author: int
    client_id: str | None


def rows_insert(rows: list[tuple], *, all_new: bool) -> Written:
    """Insert message rows (values of records.ROW_FIELDS). A row whose id is stored, or earlier in
    the batch, is that message again and is skipped. No other message is ever left out: a row whose
    (room, seq) another id holds (a seq handed out twice, say by a promoted Redis replica) is stored
    under a new seq above the room's highest; a row whose (author, room, client_id) another id holds
    is a re-send of that message, which stands. `all_new`: the rows come from message.created
    records, so a conflict is rare (a replay, a redelivered record) and the INSERT first runs
    without conflict handling."""
    if connection.vendor != "postgresql":
        return _rows_insert_checked(rows)
    with connection.cursor() as cursor:
        params = _arrays(rows)
        # Each step in a savepoint, which undoes it when a row is in its way.
        if all_new:
            # ON CONFLICT probes every unique index before each row goes in, a fifth of Postgres's
            # work per row; a plain INSERT finds a conflict anyway.
            with contextlib.suppress(IntegrityError), transaction.atomic():
                cursor.execute(_insert_sql(skip_same_id=False), params)
                return Written(new=cursor.rowcount)
        # Redelivered records and changes to stored messages: the same ids again, nothing else.
        with contextlib.suppress(IntegrityError), transaction.atomic():
            cursor.execute(_insert_sql(skip_same_id=True), params)
            return Written(new=cursor.rowcount)
    return _rows_insert_checked(rows)


def _rows_insert_checked(rows: list[tuple]) -> Written:
    """The rows checked one by one against the stored ones they meet and those before them in the
    batch (_sorted_out), then inserted; looked at again when a concurrent writer got in the way."""
    for attempt in range(_CHECKED_TRIES):
        written, keep = _sorted_out(rows, _stored_conflicts(rows))
        try:
            with transaction.atomic():
                written.new = _insert(keep)
            return written
        except IntegrityError:
            if attempt == _CHECKED_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _sorted_out(rows: list[tuple], stored: list[_Stored]) -> tuple[Written, list[tuple]]:
    """Which rows to insert, some under a new seq, and which are re-sends, in batch order."""
    ids = {held.id for held in stored}
    seqs = {(held.room, held.seq): held.id for held in stored}
    clients = {(held.author, held.room, held.client_id): held.id for held in stored if held.client_id is not None}
    batch_top: dict[int, int] = {}
    for row in rows:
        batch_top[row[_ROOM]] = max(batch_top.get(row[_ROOM], 0), row[_SEQ])
    top: dict[int, int] = {}  # per room renumbered in: the highest seq taken, stored or in the batch
    written, keep = Written(), []
    for row in rows:
        ident, room, seq, client_id = row[_ID], row[_ROOM], row[_SEQ], row[_CLIENT_ID]
        if ident in ids:
            continue
        ids.add(ident)
        client = (row[_AUTHOR], room, client_id)
        if client_id is not None and client in clients:
            written.resent.append(Resent(ident, room, client_id, kept=clients[client]))
            continue
        if (room, seq) in seqs:
            if room not in top:
                # Above every seq of the room in this batch too, so no later row meets it.
                highest = Message.objects.filter(room_id=room).aggregate(top=Max("seq"))["top"] or 0
                top[room] = max(highest, batch_top[room])
            top[room] += 1
            written.renumbered.append(Renumbered(ident, room, was=seq, seq=top[room], holder=seqs[(room, seq)]))
            seq = top[room]
            row = (*row[:_SEQ], seq, *row[_SEQ + 1:])
        seqs[(room, seq)] = ident
        if client_id is not None:
            clients[client] = ident
        keep.append(row)
    return written, keep


def _stored_conflicts(rows: list[tuple]) -> list[_Stored]:
    """The stored messages with a row's id, (room, seq) or (author, room, client_id)."""
    names = ("id", "room", "seq", "author", "client_id")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_conflicts_sql(), _arrays(rows, names))
            return [_Stored(str(ident), *rest) for ident, *rest in cursor.fetchall()]
    # The embedded default's SQLite, a record at a time: the ORM, a chunk of rows per query.
    found = {}
    for start in range(0, len(rows), 100):
        wanted = Q()
        for row in rows[start:start + 100]:
            wanted |= Q(id=row[_ID]) | Q(room_id=row[_ROOM], seq=row[_SEQ])
            if row[_CLIENT_ID] is not None:
                wanted |= Q(author_id=row[_AUTHOR], room_id=row[_ROOM], client_id=row[_CLIENT_ID])
        for values in Message.objects.filter(wanted).values_list("id", "room_id", "seq", "author_id", "client_id"):
            found[values[0]] = _Stored(str(values[0]), *values[1:])
    return list(found.values())


def _insert(rows: list[tuple]) -> int:
    """Insert rows sorted out by _sorted_out: a stored id (a concurrent writer's) is skipped, any
    other conflict raises IntegrityError."""
    if not rows:
        return 0
    if connection.vendor != "postgresql":
        names = [Message._meta.get_field(name).attname for name in records.ROW_FIELDS]
        Message.objects.bulk_create([Message(**dict(zip(names, row, strict=True))) for row in rows])
        return len(rows)
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(skip_same_id=True), _arrays(rows))
        return cursor.rowcount


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


def search_index_tidy() -> int:
    """Merge the pending entries of the search index (migration 0004) into the index proper;
    returns the pages of pending entries there were.

    A GIN index takes new entries into a pending list, cheaply; whichever insert finds the list
    over gin_pending_list_limit (4 MB) merges it, which a batch's writer would otherwise pay for
    (a tenth of Postgres's work per row, all in one batch now and then). The worker calls this
    from a thread of its own after each stored batch, so the merge runs beside the writers and
    searches find a short pending list. Only the index's owner may merge it: this calls
    chat_search_index_tidy() (the database_roles migration), which runs as the owner and which
    only the worker's database role may execute (docs/deployment.md, "Database roles")."""
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT chat_search_index_tidy()")
        return cursor.fetchone()[0]


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


def _uuid_array(values) -> str:
    return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"


def _json_array(values) -> str:
    return _text_array(orjson.dumps(value).decode() for value in values)


# One per records.ROW_FIELDS: id, room, seq, author, body, created_at, edited_at, hidden, deleted, client_id,
# rev, reply_to, reactions, attachments.
_ARRAY_LITERALS = (_plain_array, _plain_array, _plain_array, _plain_array, _text_array, _time_array, _time_array,
                   _bool_array, _bool_array, _text_array, _plain_array, _uuid_array, _json_array, _json_array)


def _arrays(rows: list[tuple], names: tuple[str, ...] = records.ROW_FIELDS) -> list[str]:
    """One array literal per named field, of every row's value."""
    columns = list(zip(*rows, strict=True))
    return [_ARRAY_LITERALS[position](columns[position]) for position in map(records.ROW_FIELDS.index, names)]


def _unnest(names: tuple[str, ...]) -> str:
    """unnest(%s::type[], ...) of the named Message fields, a column each, typed from Message._meta
    (a varchar's length is left to the column, so a too-long value is refused rather than cut)."""
    types = [Message._meta.get_field(name).db_type(connection).split("(")[0] for name in names]
    return f"unnest({', '.join(f'%s::{db_type}[]' for db_type in types)})"


@functools.cache
def _insert_sql(*, skip_same_id: bool) -> str:
    """INSERT INTO message (...) SELECT * FROM unnest(...) [ON CONFLICT (id) DO NOTHING]."""
    quote = connection.ops.quote_name
    fields = [Message._meta.get_field(name) for name in records.ROW_FIELDS]
    return (
        f"INSERT INTO {quote(Message._meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"SELECT * FROM {_unnest(records.ROW_FIELDS)}"
        + (f" ON CONFLICT ({quote(Message._meta.pk.column)}) DO NOTHING" if skip_same_id else "")
    )


@functools.cache
def _conflicts_sql() -> str:
    """SELECT the stored rows (id, room, seq, author, client_id) that share a batch row's id, its
    (room, seq) or its (author, room, client_id): one probe of each unique index per row."""
    quote = connection.ops.quote_name
    names = ("id", "room", "seq", "author", "client_id")
    columns = [quote(Message._meta.get_field(name).column) for name in names]
    stored = ", ".join(f"m.{column}" for column in columns)
    table = quote(Message._meta.db_table)
    matches = (("id",), ("room", "seq"), ("author", "room", "client_id"))
    return f"WITH b ({', '.join(names)}) AS (SELECT * FROM {_unnest(names)}) " + " UNION ".join(
        f"SELECT {stored} FROM {table} m JOIN b ON "
        + " AND ".join(f"m.{columns[names.index(name)]} = b.{name}" for name in match)
        for match in matches
    )
