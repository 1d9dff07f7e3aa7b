"""Message retention (docs/operations.md, "Retention"): how long each room keeps its messages, the
pruning behind `manage.py prune_messages`, and the worker's refusal to bring a pruned message back.

A room keeps its messages `Room.retention_days` days when set (shorter or longer than the global,
0 for ever), else CHAT_RETENTION_DAYS (unset, empty or 0: for ever). A message is past retention
once its created_at is older than now minus those days.
"""

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from chat import metrics
from chat.models import Attachment, Message, Room

logger = logging.getLogger(__name__)

ROOM_DAYS_TTL = 60.0  # seconds a process keeps the rooms' own retention before reading it again
# The Postgres advisory lock a pruning run holds, so two runs (cron overlapping itself) never race:
# "chatprun" as a bigint.
PRUNE_LOCK_KEY = int.from_bytes(b"chatprun", "big")
LOGGED_ROOMS = 10  # rooms named in the worker's line about records past retention


class PruneRunning(Exception):
    """Another pruning run holds the lock: this one does nothing."""


class PruneError(Exception):
    """A pruning run that cannot start (say, no such room)."""


def retention_days_default() -> int | None:
    """CHAT_RETENTION_DAYS, read now: the days a room without its own value keeps its messages; None: for ever."""
    days = settings.CHAT_RETENTION_DAYS
    return days if days and days > 0 else None


def retention_cutoff(days: int | None, now: datetime) -> datetime | None:
    """The time before which a message is past `days` of retention; None when kept for ever (None or 0)."""
    return now - timedelta(days=days) if days and days > 0 else None


# --- the worker: records past retention ---

_room_days: dict[int, int] = {}
_room_days_read = float("-inf")
_room_days_lock = threading.Lock()  # the worker's writer threads share the cache


def _rooms_own_days() -> dict[int, int]:
    """Room id -> its own retention_days, for the rooms that have one: one query per process every
    ROOM_DAYS_TTL seconds, none per batch (a change in the admin reaches the workers within that)."""
    global _room_days, _room_days_read
    with _room_days_lock:
        if time.monotonic() - _room_days_read >= ROOM_DAYS_TTL:
            _room_days = dict(Room.objects.filter(retention_days__isnull=False).values_list("pk", "retention_days"))
            _room_days_read = time.monotonic()
        return _room_days


def retention_cache_clear() -> None:
    """Forget the rooms' own retention read by this process: the next batch reads it again."""
    global _room_days_read
    with _room_days_lock:
        _room_days_read = float("-inf")


def _aware(value: datetime) -> datetime:
    # A record's time without an offset is UTC, as the worker's write stores it.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def records_within_retention(batch: list[dict]) -> list[dict]:
    """The decoded records (any event) whose message is within its room's retention now, in order.

    The others, a replay from Kafka of messages pruned (or about to be), are not applied, so pruning
    never comes undone: counted in chat_worker_records_past_retention_total and logged in one line
    per batch."""
    default = retention_days_default()
    own = _rooms_own_days()
    if default is None and not own:
        return batch
    now = timezone.now()
    cutoffs: dict[int, datetime | None] = {}
    kept: list[dict] = []
    past: Counter[int] = Counter()
    for record in batch:
        room = record["room_id"]
        if room not in cutoffs:
            cutoffs[room] = retention_cutoff(own.get(room, default), now)
        cutoff = cutoffs[room]
        if cutoff is not None and _aware(record["created_at"]) < cutoff:
            past[room] += 1
        else:
            kept.append(record)
    if past:
        total = sum(past.values())
        metrics.WORKER_PAST_RETENTION.inc(total)
        rooms = ", ".join(f"room {room}: {count}" for room, count in past.most_common(LOGGED_ROOMS))
        more = f" and {len(past) - LOGGED_ROOMS} more rooms" if len(past) > LOGGED_ROOMS else ""
        logger.warning("%d records past their room's retention not applied (a replay of pruned messages?): %s%s",
                       total, rooms, more)
    return kept


# --- pruning ---

@dataclass
class RoomPruned:
    """One room's part of a pruning run: its messages (and their attachments) created before `cutoff`."""

    slug: str
    days: int
    cutoff: datetime
    messages: int = 0
    attachments: int = 0
    done: bool = False


@dataclass
class PruneSummary:
    dry_run: bool
    default_days: int | None
    rooms_checked: int = 0
    rooms: list[RoomPruned] = field(default_factory=list)  # those with messages past retention

    @property
    def messages(self) -> int:
        return sum(room.messages for room in self.rooms)

    @property
    def attachments(self) -> int:
        return sum(room.attachments for room in self.rooms)


@contextlib.contextmanager
def _prune_lock() -> Iterator[None]:
    """Hold the pruning lock (a session-level advisory lock) for the run, or raise PruneRunning.
    SQLite, the embedded default, has one process: no lock."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PRUNE_LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise PruneRunning("another prune_messages run holds the lock")
    try:
        yield
    finally:
        # A connection lost meanwhile took the lock with it.
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK_KEY])


def _cutoff_seq(room_id: int, cutoff: datetime) -> int | None:
    """The highest seq of the room's messages created before `cutoff`, or None when its oldest is not.

    Found by bisection on the unique (room, seq) index, a probe of one row each, since an older
    message has a lower seq: no scan of the room's rows. Messages out of that order near the cut-off
    (web instances' clocks apart, a message stored under a new seq) go in a later run."""
    messages = Message.objects.filter(room_id=room_id).values_list("seq", "created_at")
    oldest = messages.order_by("seq").first()
    if oldest is None or oldest[1] >= cutoff:
        return None
    newest = messages.order_by("-seq").first()
    if newest[1] < cutoff:
        return newest[0]
    low, high = oldest[0], newest[0]  # low's message is past the cut-off; none from high on is
    while high - low > 1:
        middle = (low + high) // 2
        probe = messages.filter(seq__gte=middle, seq__lt=high).order_by("seq").first()
        if probe is not None and probe[1] < cutoff:
            low = probe[0]
        else:
            high = middle
    return low


def _files_delete(attachments: list[Attachment]) -> None:
    """The attachments' files, through the storage API; an error stops the run before their rows go,
    so the next run tries again (deleting a file that is gone already is no error)."""
    for attachment in attachments:
        for stored in (attachment.file, attachment.thumbnail):
            if stored.name:
                stored.storage.delete(stored.name)


def _room_prune(room: RoomPruned, room_id: int, *, batch_size: int, pause: float, dry_run: bool,
                progress: Callable[[RoomPruned], None]) -> None:
    cutoff_seq = _cutoff_seq(room_id, room.cutoff)
    if cutoff_seq is None:
        return
    doomed = Message.objects.filter(room_id=room_id, seq__lte=cutoff_seq, created_at__lt=room.cutoff)
    if dry_run:
        room.messages = doomed.count()
        room.attachments = Attachment.objects.filter(message_id__in=doomed.values("pk")).count()
        return
    after = None
    while True:
        chunk = doomed if after is None else doomed.filter(seq__gt=after)
        rows = list(chunk.order_by("seq").values_list("pk", "seq")[:batch_size])
        if not rows:
            return
        ids = [ident for ident, _ in rows]
        _files_delete(list(Attachment.objects.filter(message_id__in=ids)))
        # Reports and mentions of these messages go with them (CASCADE); the moderation log keeps
        # its rows, their target_message set null; Postgres drops their search index entries.
        with transaction.atomic():
            room.attachments += Attachment.objects.filter(message_id__in=ids).delete()[1].get("chat.Attachment", 0)
            room.messages += Message.objects.filter(pk__in=ids).delete()[1].get("chat.Message", 0)
        after = rows[-1][1]
        progress(room)
        if len(rows) < batch_size:
            return
        if pause:
            time.sleep(pause)  # a short breath for the worker's writes and live chat


def messages_prune(*, room_slug: str | None = None, batch_size: int = 1000, pause: float = 0.1,
                   dry_run: bool = False, progress: Callable[[RoomPruned], None] = lambda room: None) -> PruneSummary:
    """Delete every message past its room's retention (with its attachments' files and rows), room by
    room, `batch_size` messages per transaction with `pause` seconds between them; `progress` is
    called after each batch and once per room at its end (`done`). With `dry_run`, count them and
    delete nothing. Raises PruneRunning when another run holds the lock (Postgres), PruneError when
    `room_slug` names no room."""
    if batch_size < 1:
        raise PruneError("the batch size must be at least 1")
    default = retention_days_default()
    summary = PruneSummary(dry_run=dry_run, default_days=default)
    rooms = Room.objects.order_by("pk")
    if room_slug is not None:
        rooms = rooms.filter(slug=room_slug)
        if not rooms.exists():
            raise PruneError(f"no room '{room_slug}'")
    elif default is None:
        rooms = rooms.filter(retention_days__gt=0)
    now = timezone.now()
    with contextlib.nullcontext() if dry_run else _prune_lock():
        for room_id, slug, own in list(rooms.values_list("pk", "slug", "retention_days")):
            days = own if own is not None else default
            if not days or days < 1:
                continue
            summary.rooms_checked += 1
            room = RoomPruned(slug=slug, days=days, cutoff=retention_cutoff(days, now))
            _room_prune(room, room_id, batch_size=batch_size, pause=pause, dry_run=dry_run, progress=progress)
            if room.messages or room.attachments:
                summary.rooms.append(room)
                room.done = True
                progress(room)
    return summary
