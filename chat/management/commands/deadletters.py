"""Read and re-drive the worker's dead letters: reading is chat/bus/deadletter_reader.py, the
re-drive and its ledger chat/services/deadletters.py; this command parses, prints and exits."""

import argparse
import time
from collections import Counter

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from chat.bus.deadletter_reader import (
    TIMEOUT,
    DeadLetter,
    DeadLettersError,
    Filter,
    age_text,
    dead_letter_get,
    dead_letters_read,
    since_parse,
)
from chat.management.commandkit import at_least, exits_on
from chat.services.deadletters import (
    APPLIED,
    FAILED,
    SKIPPED,
    WOULD_REDRIVE,
    RedriveStopped,
    RedriveSummary,
    Result,
    dead_letter_ledger,
    dead_letters_ledger,
    dead_letters_redrive,
)

# Exit codes: 1 when a dead letter failed to re-drive, 2 when the command could not do its work
# (Kafka or Postgres unreachable, no such topic or record; argparse also uses 2 for bad arguments).
FAILED_EXIT, UNABLE_EXIT = 1, 2
PROGRESS_RECORDS, PROGRESS_SECONDS = 1000, 10.0


def _since(text: str):
    try:
        return since_parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _chosen(options) -> Filter:
    return Filter(since=options["since"], reason=options["reason"])


def _ledger_word(ledger: dict | None, letter: DeadLetter) -> str:
    if ledger is None:
        return "?"
    entry = ledger.get((letter.partition, letter.offset))
    return entry.outcome if entry is not None and entry.source == letter.source else "-"


class Command(BaseCommand):
    help = ("Read and re-drive the records the worker dead-lettered (<topic>.dead, with their reason and source "
            "headers). Reading changes nothing in Kafka: no consumer group, no commits.")

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show,redrive}")
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--topic", default=None,
                            help="The message topic whose dead letters to read, <topic>.dead (default: KAFKA_TOPIC).")
        common.add_argument("--timeout", type=at_least(0.5, float), default=TIMEOUT,
                            help=f"Seconds any Kafka call may take before the command gives up (default: {TIMEOUT:g}).")
        # Also after the subcommand (`redrive -v 2`); unset there, the command's own -v stands.
        common.add_argument("-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=argparse.SUPPRESS,
                            help="0: the summary and failures only; 1 (default): also progress and dry-run lines; "
                                 "2: also each record applied; 3: every record.")
        chosen = argparse.ArgumentParser(add_help=False)
        chosen.add_argument("--since", type=_since, default=None,
                            help="Only records dead-lettered since then: a duration back from now (90s, 15m, 2h, "
                                 "3d, 1w) or an ISO 8601 date or time (UTC unless it says otherwise).")
        chosen.add_argument("--reason", default=None,
                            help="Only records whose reason contains this text (case-insensitive).")
        listing = actions.add_parser(
            "list", parents=[common, chosen], help="One line per dead letter, then counts by reason.",
            description="One line per dead letter, oldest first within a partition: its place in the dead-letter "
                        "topic (partition:offset), where it came from (topic:partition:offset), its room and "
                        "event when its value says so, its age and the reason; then how many there are of each "
                        "reason, and whether each was re-driven.")
        listing.add_argument("--limit", type=at_least(0), default=None,
                             help="Print at most this many lines (the counts still cover every match).")
        showing = actions.add_parser(
            "show", parents=[common], help="One dead letter in full: headers and value.",
            description="One dead letter in full: its place, time, key, headers, its value (pretty-printed when "
                        "it is JSON) and what the ledger says of it.")
        showing.add_argument("place", metavar="PARTITION:OFFSET",
                             help="Where the record is in the dead-letter topic (OFFSET alone when it has one "
                                  "partition), as `list` prints it.")
        redriving = actions.add_parser(
            "redrive", parents=[common, chosen],
            help="Apply the matching dead letters again, through the worker's write.",
            description="Apply each matching dead letter again through the worker's own write (decoded, then "
                        "stored idempotently, rev-checked, one record per transaction), recording each outcome in "
                        "the ledger (DeadLetterRedrive). A record the ledger has as applied is skipped; one that "
                        "failed is tried again. Exits 1 when any record failed, 2 when Kafka or Postgres could "
                        "not be used.")
        redriving.add_argument("--dry-run", action="store_true",
                               help="Decode and report what would be re-driven; write nothing, to the ledger "
                                    "neither.")

    def handle(self, *args, action: str, **options):
        run = {"list": self.handle_list, "show": self.handle_show, "redrive": self.handle_redrive}[action]
        with exits_on(DeadLettersError, returncode=UNABLE_EXIT):
            run(options)

    def handle_list(self, options) -> None:
        now, shown, reasons, total = timezone.now(), 0, Counter(), 0
        try:
            ledger = dead_letters_ledger(topic=options["topic"])
        except DatabaseError as exc:
            ledger = None
            self.stderr.write(f"the ledger could not be read ({exc.__class__.__name__}); listing without it")

        def other(_letter: DeadLetter) -> None:
            nonlocal total
            total += 1

        only = _chosen(options)
        for letter in dead_letters_read(topic=options["topic"], only=only, timeout=options["timeout"], skipped=other):
            total += 1
            reasons[letter.reason] += 1
            if options["limit"] is None or shown < options["limit"]:
                shown += 1
                room = letter.room_id if letter.room_id is not None else "-"
                self.stdout.write(f"{letter.place}  source={letter.source or '-'}  room={room}  "
                                  f"event={letter.event or '-'}  age={age_text(letter.timestamp, now=now)}  "
                                  f"redrive={_ledger_word(ledger, letter)}  reason={letter.reason or '-'}")
        matched = sum(reasons.values())
        more = f", {shown} shown" if shown < matched else ""
        self.stdout.write(f"{matched} dead letter{'' if matched == 1 else 's'} of {total} in the topic{more}")
        for reason, count in reasons.most_common():
            self.stdout.write(f"{count:>7}  {reason or '(no reason header)'}")

    def handle_show(self, options) -> None:
        letter = dead_letter_get(place=options["place"], topic=options["topic"], timeout=options["timeout"])
        when = f"{letter.timestamp:%Y-%m-%d %H:%M:%S}Z ({age_text(letter.timestamp)} ago)" if letter.timestamp else "?"
        self.stdout.write(f"{letter.topic} {letter.place}, dead-lettered {when}")
        self.stdout.write(f"key: {letter.key.decode(errors='replace') if letter.key is not None else '-'}")
        for name, value in letter.headers:
            self.stdout.write(f"{name}: {(value or b'').decode(errors='replace')}")
        try:
            entry = dead_letter_ledger(letter)
        except DatabaseError as exc:
            self.stderr.write(f"the ledger could not be read ({exc.__class__.__name__})")
            self.stdout.write("ledger: unknown (Postgres did not answer)")
        else:
            self.stdout.write("ledger: never re-driven" if entry is None else
                              f"ledger: {entry.outcome} after {entry.attempts} attempt(s), last "
                              f"{entry.updated_at:%Y-%m-%d %H:%M:%S}Z: {entry.detail}")
        try:
            value = orjson.dumps(orjson.loads(letter.value or b""), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            value = f"(not JSON, {len(letter.value or b'')} bytes) {letter.value!r}"
        self.stdout.write(value)

    def handle_redrive(self, options) -> None:
        dry_run, verbose = options["dry_run"], options["verbosity"]
        seen, failed, last = 0, 0, time.monotonic()

        def report(result: Result) -> None:
            nonlocal seen, failed, last
            seen += 1
            failed += result.outcome == FAILED
            line = f"{result.letter.place} ({result.letter.source or 'no source'}) {result.outcome}"
            if result.outcome == FAILED:
                self.stderr.write(f"{line}: {result.detail}")
            elif (result.outcome == WOULD_REDRIVE and verbose >= 1) or (result.outcome == APPLIED and verbose >= 2) \
                    or (result.outcome != SKIPPED and verbose >= 3):
                self.stdout.write(f"{line}: {result.detail}" if result.detail else line)
            if verbose >= 1 and (seen % PROGRESS_RECORDS == 0 or time.monotonic() - last >= PROGRESS_SECONDS):
                last = time.monotonic()
                self.stdout.write(f"... {seen} read so far, {failed} failed")

        try:
            summary = dead_letters_redrive(topic=options["topic"], only=_chosen(options), dry_run=dry_run,
                                           timeout=options["timeout"], report=report)
        except RedriveStopped as exc:
            self.summary(exc.summary, dry_run=dry_run)  # what was done before Kafka or Postgres failed
            raise CommandError(f"stopped: {exc}", returncode=UNABLE_EXIT) from exc
        self.summary(summary, dry_run=dry_run)
        if summary.failed:
            raise CommandError(f"{summary.failed} dead letter{'' if summary.failed == 1 else 's'} "
                               f"{'would fail' if dry_run else 'failed'} (see above)", returncode=FAILED_EXIT)

    def summary(self, summary: RedriveSummary, *, dry_run: bool) -> None:
        done = (f"{summary.would_redrive} would be re-driven" if dry_run
                else f"{summary.applied} applied ({summary.new_rows} new row{'' if summary.new_rows == 1 else 's'})")
        self.stdout.write(f"{'dry run: ' if dry_run else ''}{summary.read} read: {done}, {summary.already_applied} "
                          f"already applied, {summary.failed} failed, {summary.skipped} skipped by filter")
        for reason, count in sorted(summary.failures.items(), key=lambda item: -item[1]):
            self.stderr.write(f"{count:>7}  failed: {reason}")
