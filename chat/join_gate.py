"""The first thing a WebSocket meets: past CHAT_MAX_PENDING_JOINS joins under way in this process
(from the handshake until the consumer calls `join_done` with its first frame out, or the socket
ends), a new one is accepted and closed at once with 1013 and a `retry_after=<seconds>` reason,
before its session, user or room cost anything.

A server whose listening sockets can stop accepting (daphne's: config/daphne_listen.py) registers
them with `listener_add`: at the limit they stop, so new connections wait in the kernel's listen
queue, costing the process nothing, and are taken in order as joins end, instead of each costing a
whole handshake to be shed and coming back after its hint."""

from contextvars import ContextVar
from typing import Protocol

from chat import metrics, protocol
from chat.services import limits

# The socket's own "join over" callback: its consumer runs in the task that called the gate, and a
# context variable costs the socket nothing, where a scope key would cost another copy of the scope.
_join_done: ContextVar = ContextVar("chat_join_done")


class Listener(Protocol):
    def pause(self) -> None: ...
    def resume(self) -> None: ...


_listeners: list[Listener] = []
_paused = False


def listener_add(listener: Listener) -> None:
    """A listening socket of this process, to stop while the joins under way are at the limit."""
    _listeners.append(listener)


class JoinGateMiddleware:
    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        retry_after = limits.join_begin(queued=bool(_listeners))
        if retry_after is not None:
            return await try_again_later(receive, send, retry_after)
        if not limits.joins_free():
            _accepting(False)
        counted = True

        def done() -> None:
            nonlocal counted
            if counted:
                counted = False
                limits.join_end()
                _accepting(True)

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


def _accepting(on: bool) -> None:
    global _paused
    if _paused == (not on) or not _listeners:
        return
    _paused = not on
    if _paused:
        metrics.ACCEPT_PAUSES.inc()
    for listener in _listeners:
        if _paused:
            listener.pause()
        else:
            listener.resume()


async def try_again_later(receive, send, retry_after: float) -> None:
    """Accept the socket and close it at once with 1013 and the `retry_after` reason, before the
    application has seen it."""
    metrics.CLOSES.labels(code=str(protocol.CLOSE_TRY_AGAIN_LATER)).inc()
    message = await receive()
    if message["type"] != "websocket.connect":  # the client left before its handshake was answered
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": protocol.CLOSE_TRY_AGAIN_LATER,
                "reason": f"retry_after={retry_after}"})
