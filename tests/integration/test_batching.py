"""Script calls made together go to Redis as one pipeline (chat.batching.PipelineBatch), each
caller getting its own result or error, against a real Redis."""

import asyncio
import os

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

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


async def test_a_redis_that_lost_its_scripts_gets_them_again(redis):
    add = PipelineBatch(redis).script(redis.register_script(ADD))
    key = unique("batch-flushed")
    try:
        assert await add(keys=[key], args=[2]) == 2
        await redis.script_flush()  # as after a restart or a failover to a replica without them
        assert await asyncio.gather(add(keys=[key], args=[3]), add(keys=[key], args=[4])) == [5, 9]
    finally:
        await redis.delete(key)
