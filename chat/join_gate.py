"""The first thing a WebSocket meets: past CHAT_MAX_PENDING_JOINS joins under way in this process
(from the handshake until the consumer calls `join_done` with its first frame out, or the socket
ends), a new one is accepted and closed at once with 1013 and a `retry_after=<seconds>` reason,
before its session, user or room cost anything."""

from contextvars import ContextVar

from chat import metrics, protocol
from chat.services import limits

# The socket's own "join over" callback: its consumer runs in the task that called the gate, and a
# context variable costs the socket nothing, where a scope key would cost another copy of the scope.
_join_done: ContextVar = ContextVar("chat_join_done")


class JoinGateMiddleware:
    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        retry_after = limits.join_begin()
        if retry_after is not None:
            return await _shed(receive, send, retry_after)
        counted = True

        def done() -> None:
            nonlocal counted
            if counted:
                counted = False
                limits.join_end()

        _join_done.set(done)
        try:
            return await self.inner(scope, receive, send)
        finally:
            done()


def join_done() -> None:
    """The socket's join is over (its first frame is out): it no longer counts against the limit."""
    _join_done.get(_nothing)()


def _nothing() -> None:
    pass


async def _shed(receive, send, retry_after: float) -> None:
    metrics.CLOSES.labels(code=str(protocol.CLOSE_TRY_AGAIN_LATER)).inc()
    message = await receive()
    if message["type"] != "websocket.connect":  # the client left before its handshake was answered
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": protocol.CLOSE_TRY_AGAIN_LATER,
                "reason": f"retry_after={retry_after}"})
