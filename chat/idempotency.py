"""The idempotency entries of sends (contract §4): which message a user's `client_id` in a room
already got, kept for CHAT_IDEMPOTENCY_WINDOW in a compact form.

In Redis (chat/roomscripts.py, CLIENT_ID_LUA) a room's entries live in time buckets of an eighth
of the window; a bucket is spread over small hashes (a power of two of them, doubled as the bucket
fills) so each stays in Redis's compact listpack encoding, and each expires as a whole once its
bucket's window has passed. An entry is an 8-byte keyed digest of (user, client_id) -> the
message id's 16 bytes, its seq and an `a` once Kafka has it: about 40 bytes a message.
"""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

BUCKETS_PER_WINDOW = 8  # a finer split adds a lookup per send; a coarser one keeps entries longer
RESTORE_LIMIT = 20_000  # entries put back per room in a new epoch: the newest, those a retry is likeliest for


@dataclass(frozen=True, slots=True)
class Entry:
    message_id: str
    seq: int
    acked: bool


def window_seconds() -> int:
    return max(1, settings.CHAT_IDEMPOTENCY_WINDOW)


def bucket_seconds() -> int:
    return max(1, window_seconds() // BUCKETS_PER_WINDOW)


def entry_digest(user_id: int, client_id: str) -> tuple[bytes, int]:
    """The entry's field and the number that picks its hash within a bucket. Keyed with the
    deployment's secret, so nobody can make their client_id collide with another user's."""
    key = hashlib.blake2b(settings.SECRET_KEY.encode(), digest_size=32, person=b"chat-client-id").digest()
    digest = hashlib.blake2b(f"{user_id}:{client_id}".encode(), digest_size=12, key=key).digest()
    return digest[:8], int.from_bytes(digest[8:], "big")


def entry_value(message_id: str, seq: int | str) -> bytes:
    return uuid.UUID(message_id).bytes + str(seq).encode()


def entry_parse(value: bytes) -> Entry:
    rest = value[16:]
    return Entry(str(uuid.UUID(bytes=value[:16])), int(rest.rstrip(b"a")), rest.endswith(b"a"))


def stored_entries(*, room_id: int) -> list[tuple[int, str, str, int]]:
    """(author id, client_id, message id, seq) of the room's messages stored within the window,
    newest first: the entries a room's new epoch puts back after Redis lost them."""
    from chat.models import Message

    since = timezone.now() - timedelta(seconds=window_seconds())
    rows = (Message.objects.filter(room_id=room_id, created_at__gte=since).exclude(client_id=None)
            .order_by("-seq").values_list("author_id", "client_id", "id", "seq")[:RESTORE_LIMIT])
    return [(author, client_id, str(message_id), seq) for author, client_id, message_id, seq in rows]
