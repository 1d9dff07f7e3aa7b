"""What one user may cost the server, counted across every instance: a rate for each kind of frame
that costs it (each kind its own token bucket; sends have theirs in the send step) and a cap on
open sockets."""

import logging
import random
import time
from collections import deque

from django.conf import settings
from redis.exceptions import RedisError

from chat.errors import ChatError
from chat.limits import parse_rate, retry_after
from chat.roomstate import room_state

logger = logging.getLogger(__name__)

# kind -> (the setting with its rate, what the user is told they sent too many of)
FRAME_RATES = {
    "edit": ("CHAT_EDIT_RATE_LIMIT", "edits and deletes"),
    "report": ("CHAT_REPORT_RATE_LIMIT", "reports"),
    "read": ("CHAT_READ_RATE_LIMIT", "read marks"),
    "typing": ("CHAT_TYPING_RATE_LIMIT", "typing notices"),
    "resume": ("CHAT_RESUME_RATE_LIMIT", "resumes"),
    "reaction": ("CHAT_REACTION_RATE_LIMIT", "reactions"),
    "upload": ("CHAT_UPLOAD_RATE_LIMIT", "uploads"),
}


async def _bucket_wait(user_id: int, kind: str, rate: tuple[int, float]) -> float:
    """The user's bucket, on the user's shard; while that shard fails over the limit is not
    enforced, so the user's rooms on other shards do not pause with it."""
    try:
        return await room_state().limits.take(user_id, kind, rate)
    except (RedisError, OSError) as exc:
        logger.warning("user %s's %s limit not checked: its Redis shard is unreachable (%s)", user_id, kind,
                       type(exc).__name__)
        return 0.0


def send_rate() -> tuple[int, float]:
    return parse_rate(settings.CHAT_RATE_LIMIT)


def send_refused(wait: float) -> ChatError:
    wait = retry_after(wait)
    return ChatError(f"Too many messages; try again in {wait} s.", code="rate_limited", retry_after=wait)


async def send_take(*, user_id: int) -> None:
    """Count one message against the user's rate (a retried client_id too), before the room's step
    (which takes it itself when the user's bucket is on the room's shard: RedisRoomState.bucket_in_send)."""
    wait = await _bucket_wait(user_id, "send", send_rate())
    if wait:
        raise send_refused(wait)


async def rate_take(*, user_id: int, kind: str) -> None:
    """Count one frame of `kind` against the user's rate, or raise `rate_limited` with retry_after."""
    setting, noun = FRAME_RATES[kind]
    wait = await _bucket_wait(user_id, kind, parse_rate(getattr(settings, setting)))
    if wait:
        raise ChatError(f"Too many {noun}; try again in {wait} s.", code="rate_limited", retry_after=wait)


async def socket_admit(*, user_id: int, conn_id: str) -> bool:
    """Count a new socket of the user; False when CHAT_MAX_SOCKETS_PER_USER are open already. The
    hub's heartbeat keeps an instance's sockets counted, so a crashed one's stop counting on their own.
    While the user's shard fails over, sockets are let in uncounted (rooms elsewhere must not wait)."""
    try:
        return await room_state().limits.socket_open(user_id, conn_id, settings.CHAT_MAX_SOCKETS_PER_USER,
                                                     settings.CHAT_PRESENCE_TTL)
    except (RedisError, OSError) as exc:
        logger.warning("user %s's socket let in uncounted: its Redis shard is unreachable (%s)", user_id,
                       type(exc).__name__)
        return True


async def socket_release(*, user_id: int, conn_id: str) -> None:
    await room_state().limits.socket_close(user_id, conn_id)


_joining = 0  # this process's joins between accept and hello
_joined: deque[float] = deque(maxlen=4096)  # when the latest joins ended, for the rate they end at
# When a listener that waits for free join slots (config/daphne_listen.py) took each connection the
# application has not seen yet: any of them may be a join, and an accept round must leave room for
# them or they arrive past the limit and are shed. One the application never sees (its client left)
# stops counting after ACCEPT_TRANSIT_SECONDS.
_accepted: deque[float] = deque()
ACCEPT_TRANSIT_SECONDS = 1.0


def connection_accepted() -> None:
    """A gated listener took a connection, on its way to the application."""
    _accepted.append(time.monotonic())


def connection_arrived() -> None:
    """The server handed a request to the application: one connection less in transit (which one
    does not matter; a request on a kept-alive connection only makes the count err low, as it was)."""
    if _accepted:
        _accepted.popleft()


def joins_in_transit() -> int:
    """Connections a gated listener took that the application has not seen yet."""
    now = time.monotonic()
    while _accepted and now - _accepted[0] > ACCEPT_TRANSIT_SECONDS:
        _accepted.popleft()
    return len(_accepted)


def join_begin(*, queued: bool = False) -> float | None:
    """Count a join under way in this process; past CHAT_MAX_PENDING_JOINS it is not counted and
    the seconds the client should wait before it tries again come back (`join_wait`), spread from
    half to one and a half times it so a storm's retries do not come back together. `queued`: the
    server holds the sockets that wait in its listen queue, which orders a retry behind them, so
    the retry needs only the least wait."""
    global _joining
    if _joining >= settings.CHAT_MAX_PENDING_JOINS:
        wait = settings.CHAT_JOIN_RETRY_SECONDS if queued else join_wait(_joining, _joined, time.monotonic())
        return _spread(wait)
    _joining += 1
    return None


def join_retry_hint() -> float:
    """The retry hint of a join refused for something other than the joins under way (a service it
    needs did not answer): the least wait, spread as a shed's is."""
    return _spread(settings.CHAT_JOIN_RETRY_SECONDS)


def _spread(wait: float) -> float:
    return round(wait * random.uniform(0.5, 1.5), 1)


def joins_crowded() -> bool:
    """A reconnect storm is under way here: a tenth of CHAT_MAX_PENDING_JOINS or more joins at once,
    or as many ended in the last second (uvicorn queues a storm's handshakes itself, before they
    count as joins, so it has few under way at a time)."""
    crowd = max(1, settings.CHAT_MAX_PENDING_JOINS // 10)
    if _joining >= crowd:
        return True
    return len(_joined) >= crowd and time.monotonic() - _joined[-crowd] <= 1.0


def joins_free() -> int:
    """Joins this process may begin before CHAT_MAX_PENDING_JOINS are under way, less the sockets
    already accepted for them."""
    return max(0, settings.CHAT_MAX_PENDING_JOINS - _joining - joins_in_transit())


JOIN_RATE_SECONDS = 5.0  # the span the rate joins end at is measured over...
JOIN_RATE_MIN_ENDS = 20  # ...from at least this many ends in it
# A few seconds of ends say little of the next few: at a storm's start the joins under way end slowly
# while the process takes them in (500 joins at a dozen ends a second make 40 s), and a second later
# it ends hundreds a second. A client shed again backs off further on its own
# (chat/static/chat/connection.js), so a short hint does not pile retries up.
JOIN_RETRY_MAX_SECONDS = 10.0


def join_wait(pending: int, ended: deque[float], now: float) -> float:
    """Seconds `pending` joins need at the rate joins ended lately (in the last JOIN_RATE_SECONDS,
    from the oldest of them), at least CHAT_JOIN_RETRY_SECONDS, at most JOIN_RETRY_MAX_SECONDS (or the
    setting, if larger). Too few recent ends say nothing of the rate (a storm's first moment,
    stragglers of an earlier burst, a quiet spell): then the setting."""
    count, oldest = 0, now
    for end in reversed(ended):  # newest first; stop at the first too old (a shed is on the hot path)
        if now - end > JOIN_RATE_SECONDS:
            break
        count, oldest = count + 1, end
    wait = settings.CHAT_JOIN_RETRY_SECONDS
    if count >= JOIN_RATE_MIN_ENDS:
        rate = count / max(1.0, now - oldest)
        wait = max(wait, min(JOIN_RETRY_MAX_SECONDS, pending / rate))
    return wait


def join_end() -> None:
    global _joining
    _joining -= 1
    _joined.append(time.monotonic())
