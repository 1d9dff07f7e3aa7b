"""Reading the dead-letter topic (`<topic>.dead`, written by chat/bus/deadletter.py) back without
changing anything in Kafka: its records as DeadLetter, the filter the commands choose them by, and
the parsing and display of their times.

Reading assigns the topic's partitions to a consumer of no group that never commits, and reads
from the beginning to the end offsets seen at the start; every Kafka call has a bounded timeout.
"""

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from django.conf import settings
from django.utils import timezone
from kafka.errors import KafkaError

from chat.bus.client import client_kwargs
from chat.bus.topics import admin_client, dead_letter_topic

TIMEOUT = 10.0  # seconds any one Kafka call (and a read making no progress) may take
POLL_MS = 500


class DeadLettersError(Exception):
    """The dead letters cannot be read (Kafka unreachable, no such topic or record) or the ledger
    cannot be written (Postgres unreachable): the run stops."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic: the refused record's key and value as they were, and
    the headers the worker added (`reason`, `source`)."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None  # when it was dead-lettered
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, record) -> "DeadLetter":
        when = None
        if record.timestamp is not None and record.timestamp >= 0:
            when = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
        return cls(topic=record.topic, partition=record.partition, offset=record.offset, timestamp=when,
                   key=record.key, value=record.value, headers=tuple(record.headers or ()))

    @property
    def place(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return (value or b"").decode(errors="replace")
        return ""

    @property
    def reason(self) -> str:
        return self.header("reason")

    @property
    def source(self) -> str:
        return self.header("source")

    def peek(self) -> dict:
        """The value as JSON, unchecked (an empty dict when it is not a JSON object)."""
        try:
            value = orjson.loads(self.value or b"")
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def room_id(self) -> int | None:
        room = self.peek().get("room_id")
        return room if type(room) is int else None

    @property
    def event(self) -> str | None:
        event = self.peek().get("event")
        return event if isinstance(event, str) else None


@dataclass(frozen=True)
class Filter:
    """Which dead letters a command acts on: dead-lettered at or after `since`, with `reason`
    anywhere in the reason header (case-insensitive)."""

    since: datetime | None = None
    reason: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.since is not None and (letter.timestamp is None or letter.timestamp < self.since):
            return False
        return not self.reason or self.reason.casefold() in letter.reason.casefold()


EVERY = Filter()  # the default choice: no since, no reason, so every dead letter matches


_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_parse(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time from a duration back from now (`90s`, `15m`, `2h`, `3d`, `1w`) or an ISO 8601
    date or time (UTC unless it names its offset). ValueError otherwise."""
    text = text.strip()
    if match := _DURATION.fullmatch(text):
        return (now or timezone.now()) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a duration (90s, 15m, 2h, 3d, 1w) nor an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def age_text(when: datetime | None, *, now: datetime | None = None) -> str:
    """`when` as an age: 45s, 12m, 5h, 3d."""
    if when is None:
        return "?"
    seconds = max(0, int(((now or timezone.now()) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Reader:
    """A consumer of no group, assigned every partition of the dead-letter topic: reads, never commits."""

    def __init__(self, topic: str | None, timeout: float) -> None:
        if not settings.KAFKA_BOOTSTRAP_SERVERS:
            raise DeadLettersError("KAFKA_BOOTSTRAP_SERVERS is not set: the embedded default stores messages inline "
                                   "and dead-letters nothing")
        self.source_topic = topic or settings.KAFKA_TOPIC
        self.topic = dead_letter_topic(self.source_topic)
        self.timeout = timeout
        self.timeout_ms = int(timeout * 1000)
        self.consumer = None

    def __enter__(self) -> "_Reader":
        from kafka import KafkaConsumer, TopicPartition

        try:
            partitions = self._partitions()
            self.consumer = KafkaConsumer(
                **client_kwargs(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                bootstrap_timeout_ms=self.timeout_ms, request_timeout_ms=self.timeout_ms + POLL_MS,
                fetch_max_wait_ms=POLL_MS, max_poll_records=500,
            )
            self.partitions = [TopicPartition(self.topic, p) for p in partitions]
            self.consumer.assign(self.partitions)
        except KafkaError as exc:
            self.close()
            raise DeadLettersError(f"Kafka did not answer within {self.timeout:g} s ({_kafka_text(exc)})") from exc
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False, timeout_ms=self.timeout_ms)
            self.consumer = None

    def _partitions(self) -> list[int]:
        admin = admin_client(request_timeout_ms=self.timeout_ms, bootstrap_timeout_ms=self.timeout_ms)
        try:
            (info,) = admin.describe_topics([self.topic])
        finally:
            admin.close()
        if info["error_code"] != 0 or not info["partitions"]:
            raise DeadLettersError(f"no topic {self.topic} on the Kafka cluster (the worker creates it when it "
                                   f"starts; is the topic {self.source_topic} right?)")
        return sorted(p["partition_index"] for p in info["partitions"])

    def offsets(self) -> tuple[dict, dict]:
        """(first, end) offset of every partition now."""
        try:
            return (self.consumer.beginning_offsets(self.partitions, timeout_ms=self.timeout_ms),
                    self.consumer.end_offsets(self.partitions, timeout_ms=self.timeout_ms))
        except KafkaError as exc:
            raise DeadLettersError(f"Kafka did not give the offsets of {self.topic} ({_kafka_text(exc)})") from exc

    def read(self) -> Iterator[DeadLetter]:
        """Every dead letter from the beginning to the end offsets seen now, by partition and offset
        as fetched (in offset order within a partition)."""
        firsts, ends = self.offsets()
        left = {tp for tp in self.partitions if ends[tp] > firsts[tp]}
        if not left:
            return
        self.consumer.assign(sorted(left, key=lambda tp: tp.partition))  # only those with records
        for tp in left:
            self.consumer.seek(tp, firsts[tp])
        deadline = time.monotonic() + self.timeout
        while left:
            try:
                polled = self.consumer.poll(timeout_ms=POLL_MS)
            except KafkaError as exc:
                raise DeadLettersError(f"reading {self.topic} failed ({_kafka_text(exc)})") from exc
            for tp, batch in polled.items():
                for record in batch:
                    if tp not in left:
                        break
                    if record.offset < ends[tp]:
                        yield DeadLetter.from_record(record)
                    if record.offset + 1 >= ends[tp]:
                        self._done(tp, left)
            if polled:
                deadline = time.monotonic() + self.timeout
            elif time.monotonic() > deadline:
                raise DeadLettersError(f"Kafka sent nothing from {self.topic} for {self.timeout:g} s with "
                                       f"{len(left)} partition(s) not read to the end")
            # A gap at a partition's end (records gone, say): done once its position reaches the end.
            for tp in list(left):
                if not polled.get(tp) and self._position(tp) >= ends[tp]:
                    self._done(tp, left)

    def _done(self, tp, left: set) -> None:
        left.discard(tp)
        self.consumer.pause(tp)  # records dead-lettered since the start are for the next run

    def _position(self, tp) -> int:
        try:
            return self.consumer.position(tp, timeout_ms=self.timeout_ms) or 0
        except KafkaError as exc:
            raise DeadLettersError(f"Kafka did not give the position in {self.topic} ({_kafka_text(exc)})") from exc

    def one(self, partition: int | None, offset: int) -> DeadLetter:
        """The dead letter at `partition`:`offset` (partition None: the topic's only one)."""
        if partition is None:
            if len(self.partitions) != 1:
                raise DeadLettersError(f"{self.topic} has {len(self.partitions)} partitions: give PARTITION:OFFSET")
            (tp,) = self.partitions
        else:
            tp = next((tp for tp in self.partitions if tp.partition == partition), None)
            if tp is None:
                raise DeadLettersError(f"{self.topic} has no partition {partition}")
        firsts, ends = self.offsets()
        if not firsts[tp] <= offset < ends[tp]:
            raise DeadLettersError(f"no record at {tp.partition}:{offset} in {self.topic} (partition {tp.partition} "
                                   f"holds offsets {firsts[tp]} to {ends[tp] - 1})")
        self.consumer.assign([tp])
        self.consumer.seek(tp, offset)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                polled = self.consumer.poll(timeout_ms=POLL_MS, max_records=1)
            except KafkaError as exc:
                raise DeadLettersError(f"reading {self.topic} failed ({_kafka_text(exc)})") from exc
            for record in polled.get(tp, ()):
                if record.offset != offset:
                    raise DeadLettersError(f"no record at {tp.partition}:{offset} in {self.topic} (the next is "
                                           f"at {record.offset})")
                return DeadLetter.from_record(record)
        raise DeadLettersError(f"Kafka sent nothing from {self.topic} for {self.timeout:g} s")


def _kafka_text(exc: BaseException) -> str:
    name, text = exc.__class__.__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}".rstrip(": ")


def dead_letters_read(*, topic: str | None = None, only: Filter = EVERY, timeout: float = TIMEOUT,
                      skipped: Callable[[DeadLetter], None] | None = None) -> Iterator[DeadLetter]:
    """The dead letters of `topic` (default KAFKA_TOPIC) that `only` matches, oldest first within a
    partition; `skipped` hears of the others. DeadLettersError when Kafka cannot be read."""
    with _Reader(topic, timeout) as reader:
        for letter in reader.read():
            if only.matches(letter):
                yield letter
            elif skipped is not None:
                skipped(letter)


def dead_letter_get(*, place: str, topic: str | None = None, timeout: float = TIMEOUT) -> DeadLetter:
    """The dead letter at `place`, PARTITION:OFFSET (or OFFSET when the topic has one partition)."""
    partition, _, offset = place.rpartition(":")
    try:
        at = (int(partition) if partition else None, int(offset))
    except ValueError:
        raise DeadLettersError(f"not PARTITION:OFFSET nor OFFSET: {place!r}") from None
    with _Reader(topic, timeout) as reader:
        return reader.one(*at)
