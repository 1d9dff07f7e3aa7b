"""Delete the messages past their room's retention (chat/services/retention.py); this command
parses, prints and exits."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from chat.management.commandkit import at_least, exits_on
from chat.services.retention import PruneError, PruneRunning, RoomPruned, messages_prune


def _days(days: int | None) -> str:
    return "for ever" if days is None else f"{days} days"


class Command(BaseCommand):
    help = (
        "Delete the messages past their room's retention: created more than Room.retention_days days ago "
        "(set in the admin; 0 keeps the room's messages for ever), or CHAT_RETENTION_DAYS for rooms without "
        "their own (unset, empty or 0: kept for ever). Their attachments' files and rows, reports and mentions "
        "go with them; the moderation log keeps its entries. Deletes in batches, one transaction each, with a "
        "pause between them, so the worker and live chat go on meanwhile. Safe from cron: a run started while "
        "another is under way does nothing and exits 0. Exit status 1 when the run failed (what was deleted "
        "before the failure stays deleted; the next run goes on from there)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true",
                            help="Count what would be deleted, per room, and delete nothing.")
        parser.add_argument("--batch-size", type=at_least(1), default=1000, metavar="N",
                            help="Messages deleted per transaction (default: 1000).")
        parser.add_argument("--sleep", type=at_least(0, float), default=0.1, metavar="SECONDS",
                            help="Pause between two batches (default: 0.1).")
        parser.add_argument("--room", default=None, metavar="SLUG",
                            help="Prune this room only (default: every room with a retention).")

    def handle(self, *args, dry_run: bool, batch_size: int, sleep: float, room: str | None, verbosity: int,
               **options):
        rooms: dict[str, RoomPruned] = {}

        def progress(pruned: RoomPruned) -> None:
            rooms[pruned.slug] = pruned
            if verbosity < 1:
                return
            if pruned.done:
                verb = "would delete" if dry_run else "deleted"
                self.stdout.write(f"room {pruned.slug}: {verb} {pruned.messages} messages, {pruned.attachments} "
                                  f"attachments (created before {pruned.cutoff:%Y-%m-%d %H:%M:%S} UTC: "
                                  f"{_days(pruned.days)})")
            else:
                self.stdout.write(f"room {pruned.slug}: {pruned.messages} messages deleted so far")

        started = time.monotonic()
        try:
            with exits_on(PruneError):
                summary = messages_prune(room_slug=room, batch_size=batch_size, pause=sleep, dry_run=dry_run,
                                         progress=progress)
        except PruneRunning as exc:
            self.stdout.write(f"{exc}: nothing done")
            return
        except (DatabaseError, OSError) as exc:
            deleted = sum(pruned.messages for pruned in rooms.values())
            raise CommandError(f"pruning failed after {deleted} messages deleted: {exc.__class__.__name__}: "
                               f"{exc}".strip()) from exc
        seconds = time.monotonic() - started
        scope = (f"CHAT_RETENTION_DAYS: {_days(summary.default_days)}; {summary.rooms_checked} rooms with a "
                 "retention checked")
        if dry_run:
            self.stdout.write(f"dry run: {summary.messages} messages and {summary.attachments} attachments would be "
                              f"deleted in {len(summary.rooms)} rooms ({scope}); nothing deleted")
        else:
            self.stdout.write(f"deleted {summary.messages} messages and {summary.attachments} attachments in "
                              f"{len(summary.rooms)} rooms in {seconds:.1f} s ({scope})")
