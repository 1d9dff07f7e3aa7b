"""Typed errors the actions raise; the consumer and the API turn them into contract errors."""

from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A service a request needs did not answer (Postgres, a Redis shard: down, unreachable, failing over).
# Nothing is wrong with the request, and the same request may well succeed shortly.
SERVICE_UNAVAILABLE = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, TimeoutError)


class ChatError(Exception):
    """A request the chat refuses, with the contract's error code."""

    code = "invalid_frame"
    http_status = 400

    def __init__(self, detail: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class NotFound(ChatError):
    code = "not_found"
    http_status = 404


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403


class Conflict(ChatError):
    code = "conflict"
    http_status = 409


class NotPersisted(ChatError):
    """Kafka (or the inline store) refused the message after its retries."""

    code = "not_persisted"
    http_status = 503
