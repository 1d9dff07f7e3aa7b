"""A network reset of Redis connections (Redis restarted, a failover, a balancer dropping idle
connections) costs no command: redis-py hands out a pooled connection the reset killed as if it
were alive, so the app's shard clients and the channel layer run a command again once on a new
connection. A room feed's pub/sub reader is the exception: it must see the failure, since what was
published meanwhile never reaches it (the hub then has its rooms' sockets resume). Through a proxy
to the shared Redis that resets every connection it carries."""

from urllib.parse import urlsplit

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.shards import shard_client
from config.redis_urls import layer_host, shard_spec
from tests.conftest import SERVICES
from tests.support import FailoverProxy, unique


@pytest.fixture
def resetting_redis():
    proxy = FailoverProxy([urlsplit(SERVICES["REDIS_URL"]).port]).start()
    yield proxy, shard_spec(f"redis://127.0.0.1:{proxy.port}/0")
    proxy.stop()


def reset(proxy: FailoverProxy) -> None:
    proxy.cut()  # every connection through it reset
    proxy.restore()  # new ones get through


async def test_a_shard_clients_next_command_after_a_reset_succeeds(resetting_redis):
    proxy, spec = resetting_redis
    client, key = shard_client(spec), unique("reset-probe")
    try:
        await client.set(key, "before", ex=60)
        reset(proxy)
        assert await client.get(key) == b"before"
        async with client.pipeline(transaction=True) as pipe:  # the send path's transactions too
            reset(proxy)
            assert await pipe.set(key, "after", ex=60).get(key).execute() == [True, b"after"]
    finally:
        await client.aclose()


async def test_the_channel_layers_next_publish_after_a_reset_succeeds(resetting_redis):
    proxy, spec = resetting_redis
    layer = RedisPubSubChannelLayer(hosts=[layer_host(spec)], prefix=unique("reset-layer"))
    try:
        await layer.group_send("probe", {"type": "user.sidebar", "users": [1]})
        reset(proxy)
        await layer.group_send("probe", {"type": "user.sidebar", "users": [1]})  # raised before
    finally:
        await layer.flush()


async def test_a_room_feeds_reader_sees_the_reset(resetting_redis):
    proxy, spec = resetting_redis
    pubsub = shard_client(spec, reconnect=False).pubsub()
    try:
        await pubsub.subscribe(unique("reset-channel"))
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        reset(proxy)
        with pytest.raises(RedisConnectionError):
            await pubsub.get_message(timeout=5)
    finally:
        await pubsub.aclose()
