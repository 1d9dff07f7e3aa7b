"""Dead letters re-driven through the worker's own write, with a ledger in Postgres
(DeadLetterRedrive) so that a dead letter applied once is never applied again. Reading them back
is chat/bus/deadletter_reader.py.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, close_old_connections, transaction
from django.utils import timezone

from chat.bus import records
from chat.bus.deadletter_reader import EVERY, TIMEOUT, DeadLetter, DeadLettersError, Filter, dead_letters_read
from chat.bus.topics import dead_letter_topic
from chat.models import DeadLetterRedrive


def dead_letter_ledger(letter: DeadLetter) -> DeadLetterRedrive | None:
    """The ledger's row for `letter`, if re-driven before (not one left by an earlier topic of the same name)."""
    entry = DeadLetterRedrive.objects.filter(topic=letter.topic, partition=letter.partition,
                                             offset=letter.offset).first()
    if entry is None or entry.source != letter.source:
        return None
    return entry


def dead_letters_ledger(*, topic: str | None = None) -> dict[tuple[int, int], DeadLetterRedrive]:
    """The ledger of `topic`'s dead letters (default KAFKA_TOPIC), by (partition, offset)."""
    dead = dead_letter_topic(topic or settings.KAFKA_TOPIC)
    return {(entry.partition, entry.offset): entry for entry in DeadLetterRedrive.objects.filter(topic=dead)}


APPLIED, ALREADY_APPLIED, FAILED, WOULD_REDRIVE, SKIPPED = (
    "applied", "already applied", "failed", "would re-drive", "skipped by filter")


@dataclass(frozen=True)
class Result:
    """What a redrive did with one dead letter: one of the outcomes above, and why."""

    letter: DeadLetter
    outcome: str
    detail: str = ""


@dataclass
class RedriveSummary:
    read: int = 0
    applied: int = 0
    new_rows: int = 0
    already_applied: int = 0
    failed: int = 0
    would_redrive: int = 0
    skipped: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason -> how many


class RedriveStopped(DeadLettersError):
    """The run stopped before the end; `summary` says what it did until then."""

    def __init__(self, message: str, summary: RedriveSummary) -> None:
        super().__init__(message)
        self.summary = summary


def dead_letters_redrive(*, topic: str | None = None, only: Filter = EVERY, dry_run: bool = False,
                         timeout: float = TIMEOUT, report: Callable[[Result], None] | None = None) -> RedriveSummary:
    """Re-apply the dead letters `only` matches, each alone, through the worker's idempotent write
    (records.decode, then messages_persist), skipping those the ledger has as applied and recording
    each outcome there. With `dry_run`, decode and report what would be re-driven, writing nothing.
    `report` hears of every dead letter read. RedriveStopped when Kafka or the ledger fails midway."""
    summary = RedriveSummary()

    def tell(result: Result) -> None:
        summary.read += 1
        if result.outcome == FAILED:
            summary.failed += 1
            summary.failures[result.detail] = summary.failures.get(result.detail, 0) + 1
        else:
            attribute = {APPLIED: "applied", ALREADY_APPLIED: "already_applied", WOULD_REDRIVE: "would_redrive",
                         SKIPPED: "skipped"}[result.outcome]
            setattr(summary, attribute, getattr(summary, attribute) + 1)
        if report is not None:
            report(result)

    def skipped(letter: DeadLetter) -> None:
        tell(Result(letter, SKIPPED))

    reading = dead_letters_read(topic=topic, only=only, timeout=timeout, skipped=skipped)
    try:
        for letter in reading:
            tell(_redrive_one(letter, dry_run=dry_run, summary=summary))
    except DeadLettersError as exc:
        raise RedriveStopped(str(exc), summary) from exc
    finally:
        reading.close()  # the consumer now, not when collected
    return summary


def _redrive_one(letter: DeadLetter, *, dry_run: bool, summary: RedriveSummary) -> Result:
    try:
        entry = dead_letter_ledger(letter)
    except DatabaseError as exc:
        close_old_connections()
        raise DeadLettersError(f"the ledger could not be read ({_database_text(exc)})") from exc
    if entry is not None and entry.outcome == DeadLetterRedrive.Outcome.APPLIED:
        return Result(letter, ALREADY_APPLIED, f"on {entry.updated_at:%Y-%m-%d %H:%M:%S}Z, {entry.detail}")
    try:
        record = records.decode(letter.value)
    except records.RecordError as exc:
        detail = f"undecodable: {exc}"
        if not dry_run:
            _ledger_save(letter, DeadLetterRedrive.Outcome.FAILED, detail)
        return Result(letter, FAILED, detail)
    if dry_run:
        return Result(letter, WOULD_REDRIVE, f"{record['event']} {record['id']} in room {record['room_id']}")
    from chat.services.persistence import messages_persist

    try:
        # The ledger's row commits with the write, so no applied record is left marked failed.
        with transaction.atomic():
            new = messages_persist([record])
            detail = f"{new} new row{'' if new == 1 else 's'}"
            _ledger_save(letter, DeadLetterRedrive.Outcome.APPLIED, detail)
    except (IntegrityError, DataError, ValueError) as exc:
        detail = f"refused by the database: {' '.join(str(exc).split())}"[:500]
    except DatabaseError as exc:
        close_old_connections()  # a connection lost is opened again for the ledger
        detail = f"database error: {_database_text(exc)}"[:500]
    else:
        summary.new_rows += new
        return Result(letter, APPLIED, detail)
    _ledger_save(letter, DeadLetterRedrive.Outcome.FAILED, detail)
    return Result(letter, FAILED, detail)


def _ledger_save(letter: DeadLetter, outcome: str, detail: str) -> None:
    """Record an attempt at `letter`; DeadLettersError when Postgres does not take it."""
    try:
        with transaction.atomic():
            entry, created = DeadLetterRedrive.objects.select_for_update().get_or_create(
                topic=letter.topic, partition=letter.partition, offset=letter.offset,
                defaults={"source": letter.source, "outcome": outcome, "detail": detail, "attempts": 1})
            if not created:
                if entry.source != letter.source:  # an earlier topic's record at this place: start over
                    entry.source, entry.attempts, entry.created_at = letter.source, 0, timezone.now()
                entry.outcome, entry.detail, entry.attempts = outcome, detail, entry.attempts + 1
                entry.save()
    except DatabaseError as exc:
        raise DeadLettersError(f"the outcome of {letter.place} ({outcome}) could not be recorded in the ledger "
                               f"({_database_text(exc)})") from exc


def _database_text(exc: BaseException) -> str:
    """The error on one line (psycopg's span several)."""
    return " ".join(f"{exc.__class__.__name__}: {exc}".split())
