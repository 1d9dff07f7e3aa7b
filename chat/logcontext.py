"""Request and connection ids for log lines: set per HTTP request and per WebSocket, added to
every record by `ContextFilter` (as `request_id` and `conn_id`, "-" when there is none)."""

import logging
import uuid
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

request_id: ContextVar[str] = ContextVar("request_id", default="-")
conn_id: ContextVar[str] = ContextVar("conn_id", default="-")


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.conn_id = conn_id.get()
        return True


class RequestIdMiddleware:
    """Takes the balancer's X-Request-ID (or makes one), logs with it, and returns it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _start(self, request) -> str:
        rid = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        request_id.set(rid)
        return rid

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        rid = self._start(request)
        response = self.get_response(request)
        response["X-Request-ID"] = rid
        return response

    async def __acall__(self, request):
        rid = self._start(request)
        response = await self.get_response(request)
        response["X-Request-ID"] = rid
        return response
