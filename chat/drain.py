"""Graceful drain (contract §6): on SIGTERM a web instance fails /readyz at once, closes its sockets
with 1012 so clients reconnect elsewhere and resume, waits (bounded) for them to go, then lets the
server (daphne or uvicorn) shut down as it normally would."""

import asyncio
import logging
import os
import signal
import time

from django.conf import settings

from chat import protocol

logger = logging.getLogger(__name__)

_installed = False
_draining = False


def is_draining() -> bool:
    return _draining


def install() -> None:
    """Take over SIGTERM in this process, once, keeping the server's own handler for the end.

    Called on the first request, when the server has installed its handlers and the loop runs."""
    global _installed
    if _installed:
        return
    _installed = True
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(_drain(previous)))

    signal.signal(signal.SIGTERM, on_sigterm)


async def _drain(previous) -> None:
    global _draining
    if _draining:
        return
    _draining = True
    from chat.hub import get_hub

    hub = get_hub()
    logger.info("SIGTERM: failing /readyz for %.1f s, then closing sockets with 1012",
                settings.CHAT_DRAIN_GRACE_SECONDS)
    await asyncio.sleep(settings.CHAT_DRAIN_GRACE_SECONDS)
    logger.info("closing %d socket(s) with 1012", sum(1 for _ in hub.sockets()))
    hub.close_all(protocol.CLOSE_SERVICE_RESTART)
    deadline = time.monotonic() + settings.CHAT_DRAIN_SECONDS
    while any(True for _ in hub.sockets()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    # Their cleanups (presence, socket counts, the leaves' announcements) end before the signal goes
    # back: daphne then cancels every application still running.
    from chat.consumers import cleanups_under_way

    cleanups = cleanups_under_way()
    if cleanups and time.monotonic() < deadline:
        await asyncio.wait(cleanups, timeout=deadline - time.monotonic())
    logger.info("drained; shutting down")
    # Hand the signal back to the server's own handler (or the default: exit).
    signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
