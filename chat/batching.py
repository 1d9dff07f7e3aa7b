"""Blocking reads batched across the requests that arrive together: one thread hop (and one
connection health check) for every request waiting while the previous batch ran, so a storm of
joins costs a few queries per batch instead of several per socket."""

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async
from redis.exceptions import ConnectionError as RedisConnectionError

Request = TypeVar("Request")
Result = TypeVar("Result")


class ThreadBatch(Generic[Request, Result]):
    """`await batch(request)` runs `read(requests)` off the event loop for every request waiting,
    one batch at a time. `read` returns one result per request, in order; a result that is an
    exception is raised to its caller alone, an exception `read` raises to every caller of the batch."""

    def __init__(self, read: Callable[[list[Request]], list[Result | Exception]]) -> None:
        self._read = database_sync_to_async(read)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    async def __call__(self, request: Request) -> Result:
        loop = asyncio.get_running_loop()
        queue = self._loops.get(loop)
        if queue is None:
            queue = self._loops[loop] = _Queue()
        future = loop.create_future()
        queue.waiting.append((request, future))
        if queue.running is None:
            queue.running = asyncio.ensure_future(self._run(queue))  # next turn: this turn's requests come along
        result = await future
        if isinstance(result, Exception):
            raise result.with_traceback(None)  # one exception for a batch's callers: no tracebacks piled up
        return result

    async def _run(self, queue: "_Queue") -> None:
        try:
            while queue.waiting:
                batch, queue.waiting = queue.waiting, []
                try:
                    results = await self._read([request for request, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every request of the batch hears it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its caller went meanwhile
                        future.set_result(result)
        finally:
            queue.running = None


class _Queue:
    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.waiting: list[tuple] = []
        self.running: asyncio.Task | None = None


class PipelineBatch:
    """Script calls to one Redis client made while the previous ones are on their way, sent as one
    pipeline on one connection. A call on its own holds a pooled connection for at least a turn of
    the event loop; with hundreds of joins under way and each turn slow, the pool and not Redis set
    the pace (a reconnect storm's joins waited seconds for a connection to take their socket count).
    A call's own error is raised to its caller alone, a failed pipeline's to every caller in it."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self.waiting: list[tuple] = []
        self.running: asyncio.Task | None = None

    def script(self, script) -> Callable:
        """`script` (registered on this client) as a coroutine function of keys and args, batched."""

        async def call(*, keys: list, args: list):
            future = asyncio.get_running_loop().create_future()
            self.waiting.append((script, keys, args, future))
            if self.running is None:
                self.running = asyncio.ensure_future(self._run())  # next turn: this turn's calls come along
            result = await future
            if isinstance(result, Exception):
                raise result.with_traceback(None)  # one exception for a batch's callers: no tracebacks piled up
            return result

        return call

    async def _run(self) -> None:
        batch: list[tuple] = []
        try:
            while self.waiting:
                # A caller gone meanwhile (a socket closed during a storm) must not have its script run
                # after it: its socket would be counted with nothing left to uncount it.
                batch, self.waiting = [call for call in self.waiting if not call[3].done()], []
                if batch:
                    _settle(batch, await self._execute(batch))
        except BaseException as exc:  # no caller may wait forever on a batch that died
            error = exc if isinstance(exc, Exception) else RedisConnectionError("the Redis batch was cancelled")
            _settle(batch + self.waiting, [error] * (len(batch) + len(self.waiting)))
            self.waiting = []
            raise
        finally:
            self.running = None

    async def _execute(self, batch: list[tuple]) -> list:
        # `async with`: a pipeline that fails before its commands (its script check on a Redis still
        # loading, say) gives its connection back to the pool all the same.
        async with self.redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                await script(keys=keys, args=args, client=pipe)  # queued: the pipeline loads scripts it lacks
            try:
                return await pipe.execute(raise_on_error=False)
            except Exception as exc:  # noqa: BLE001 - every call of the batch hears it
                return [exc] * len(batch)


def _settle(batch: list[tuple], results: list) -> None:
    for (*_, future), result in zip(batch, results, strict=True):
        if not future.done():  # its caller went meanwhile
            future.set_result(result)
