"""Work batched across the requests that arrive together, so a storm of joins costs a few queries
and round trips per batch instead of several per socket: blocking reads in one thread hop for every
request waiting while the previous batch ran (`ThreadBatch`, `batch_sync_to_async`), Redis script
calls in one pipeline a turn of the event loop (`PipelineBatch`)."""

import asyncio
import functools
import time
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async
from django.db import connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

Request = TypeVar("Request")
Result = TypeVar("Result")

# A connection a batch used without error this recently needs no health check before the next.
HEALTHY_FOR_SECONDS = 1.0


def batch_sync_to_async(read: Callable) -> Callable:
    """`database_sync_to_async(read)` for batched reads, without the health check (CONN_HEALTH_CHECKS:
    a `SELECT 1` each time channels hands the connection new work) when a batch used the same
    connection without error in the last HEALTHY_FOR_SECONDS: in a storm of joins that was a round
    trip on the one database thread for every batch. A connection that broke within that second
    fails its batch as it would have between the check and the query; Django marks it and the next
    hop's close_old_connections() drops it, so the batch after reconnects."""

    @functools.wraps(read)
    def checked_when_idle(*args, **kwargs):
        raw, used_at = getattr(connection, "_chat_batch_used", (None, 0.0))
        if raw is not None and raw is connection.connection and not connection.errors_occurred \
                and time.monotonic() - used_at < HEALTHY_FOR_SECONDS:
            connection.health_check_done = True
        result = read(*args, **kwargs)
        if not connection.errors_occurred:
            connection._chat_batch_used = (connection.connection, time.monotonic())
        return result

    return database_sync_to_async(checked_when_idle)


class ThreadBatch(Generic[Request, Result]):
    """`await batch(request)` runs `read(requests)` off the event loop for every request waiting,
    one batch at a time. `read` returns one result per request, in order; a result that is an
    exception is raised to its caller alone, an exception `read` raises to every caller of the batch."""

    def __init__(self, read: Callable[[list[Request]], list[Result | Exception]]) -> None:
        self._read = batch_sync_to_async(read)
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
    """Script calls to one Redis client made in one turn of the event loop, sent as one pipeline on
    one connection. A call on its own holds a pooled connection for at least a turn of the loop; with
    hundreds of joins under way and each turn slow, the pool and not Redis set the pace (a reconnect
    storm's joins waited seconds for a connection to count their socket). Each turn's pipeline goes
    at once, beside any still on their way, and runs its scripts by hash; a Redis that lost them (a
    restart, a failover) loads them and the calls it refused run again. A call's own error is raised
    to its caller alone, a failed pipeline's to every caller in it."""

    def __init__(self, redis) -> None:
        self.redis = redis
        self.waiting: list[tuple] = []
        self.sending: set[asyncio.Task] = set()  # kept until done: the loop holds tasks weakly

    def script(self, script) -> Callable:
        """`script` (registered on this client) as a coroutine function of keys and args, batched."""

        async def call(*, keys: list, args: list):
            future = asyncio.get_running_loop().create_future()
            if not self.waiting:
                asyncio.get_running_loop().call_soon(self._flush)  # after this turn: its calls come along
            self.waiting.append((script, keys, args, future))
            result = await future
            if isinstance(result, Exception):
                raise result.with_traceback(None)  # one exception for a batch's callers: no tracebacks piled up
            return result

        return call

    def _flush(self) -> None:
        # A caller gone meanwhile (a socket closed during a storm) must not have its script run after
        # it: its socket would be counted with nothing left to uncount it.
        batch, self.waiting = [call for call in self.waiting if not call[3].done()], []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, batch: list[tuple]) -> None:
        try:
            results = await self._execute(batch)
            refused = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if refused:
                for script in {batch[i][0] for i in refused}:
                    await self.redis.script_load(script.script)
                for i, result in zip(refused, await self._execute([batch[i] for i in refused]), strict=True):
                    results[i] = result
        except Exception as exc:  # noqa: BLE001 - every call of the batch hears it
            results = [exc] * len(batch)
        except BaseException:  # cancelled: no caller may wait forever on a batch that died
            _settle(batch, [RedisConnectionError("the Redis batch was cancelled")] * len(batch))
            raise
        _settle(batch, results)

    async def _execute(self, batch: list[tuple]) -> list:
        # `async with`: a pipeline that fails gives its connection back to the pool all the same.
        async with self.redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)


def _settle(batch: list[tuple], results: list) -> None:
    for (*_, future), result in zip(batch, results, strict=True):
        if not future.done():  # its caller went meanwhile
            future.set_result(result)
