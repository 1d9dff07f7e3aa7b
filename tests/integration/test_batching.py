"""Script calls made together go to Redis as one pipeline (chat.batching.PipelineBatch), each
caller getting its own result or error, against a real Redis."""

import asyncio
import os

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from chat.batching import PipelineBatch
from tests.support import unique

# Adds ARGV[1] to the key and returns it; fails for a negative amount.
ADD = """
if tonumber(ARGV[1]) < 0 then return redis.error_reply('negative') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


@pytest.fixture
async def redis():
    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"), max_connections=64, timeout=10))
    yield client
    await client.aclose()


async def test_calls_made_together_share_a_connection_and_each_gets_its_own_result(redis):
    add = PipelineBatch(redis).script(redis.register_script(ADD))
    prefix = unique("batch")
    amounts = [n if n % 50 else -1 for n in range(1, 301)]  # every fiftieth fails
    results = await asyncio.gather(*(add(keys=[f"{prefix}:{n}"], args=[amount]) for n, amount in enumerate(amounts)),
                                   return_exceptions=True)
    try:
        for amount, result in zip(amounts, results, strict=True):
            if amount < 0:
                assert isinstance(result, ResponseError) and "negative" in str(result)
            else:
                assert result == amount
        # One call at a time would have taken a pooled connection each: 64 with 300 under way.
        pool = redis.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    finally:
        await redis.delete(*(f"{prefix}:{n}" for n in range(len(amounts))))


async def test_a_script_redis_has_not_seen_is_loaded_on_the_way(redis):
    """As after a restart or a failover to a replica without the scripts (a body of its own here, so
    no other client's scripts are flushed)."""
    body = f"-- {unique('unseen')}\n{ADD}"
    add = PipelineBatch(redis).script(redis.register_script(body))
    key = unique("batch-unseen")
    try:
        assert await asyncio.gather(add(keys=[key], args=[3]), add(keys=[key], args=[4])) == [3, 7]
    finally:
        await redis.delete(key)


async def test_a_batch_that_fails_gives_its_connection_back_to_the_pool(redis):
    """A batch that fails (here its script cannot be loaded into a Redis that lacks it) must not keep
    a connection: the pool would run dry and every later call on the shard fail."""
    user, password = unique("noscript"), unique("pw")
    await redis.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"],
                            commands=["+@all", "-script"])  # EVALSHA allowed, SCRIPT LOAD refused
    host, port = redis.connection_pool.connection_kwargs["host"], redis.connection_pool.connection_kwargs["port"]
    client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool(
        host=host, port=port, username=user, password=password, max_connections=2, timeout=1))
    add = PipelineBatch(client).script(client.register_script(f"-- {unique('refused')}\n{ADD}"))
    try:
        for _ in range(4):  # twice the pool
            with pytest.raises(NoPermissionError):
                await add(keys=[unique("batch-refused")], args=[1])
        assert not client.connection_pool._in_use_connections
    finally:
        await client.aclose()
        await redis.acl_deluser(user)


async def test_a_call_whose_caller_left_before_its_batch_went_is_not_sent(redis):
    """A socket closed while its join waited (cancelled) must not be counted after it is gone."""
    add = PipelineBatch(redis).script(redis.register_script(ADD))
    gone, kept = unique("batch-gone"), unique("batch-kept")
    try:
        leaving = asyncio.ensure_future(add(keys=[gone], args=[1]))
        await asyncio.sleep(0)  # its call is queued; the batch goes on the next turn
        leaving.cancel()
        assert await add(keys=[kept], args=[2]) == 2
        assert await redis.exists(gone) == 0
    finally:
        await redis.delete(gone, kept)
