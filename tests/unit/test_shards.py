"""REDIS_URLS as contract §7 writes it, and the stable routing of rooms and users to shards."""

import json
import subprocess

import pytest

from chat.shards import PARTITIONS, hash_tag, partition_of, shard_of
from config.redis_urls import layer_host, redis_shards
from tests.support import PYTHON, ROOT
from tests.unit.test_settings import start

SENTINELS = "127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382"


def test_each_entry_form_of_contract_section_7():
    shards = redis_shards(f"redis://127.0.0.1:6380/0  rediss://:s%40cret@cache.example.com:6390/2 "
                          f"redis+sentinel://{SENTINELS}/shard0/3 redis+sentinel://:pw@h1:1,h2:2/shard1/0")
    assert shards[0] == {"url": "redis://127.0.0.1:6380/0"}
    assert shards[1] == {"url": "rediss://:s%40cret@cache.example.com:6390/2"}  # redis-py reads the URL itself
    assert shards[2] == {"sentinels": [("127.0.0.1", 26380), ("127.0.0.1", 26381), ("127.0.0.1", 26382)],
                         "master_name": "shard0", "db": 3, "password": None}
    assert shards[3]["password"] == "pw" and shards[3]["sentinels"] == [("h1", 1), ("h2", 2)]
    # channels-redis takes the same shards, a Sentinel one in its own host form.
    url_host, sentinel_host = layer_host(shards[0]), layer_host(shards[3])
    assert url_host.pop("address") == "redis://127.0.0.1:6380/0"
    assert {"sentinels": [("h1", 1), ("h2", 2)], "master_name": "shard1", "db": 0,
            "password": "pw"}.items() <= sentinel_host.items()
    # Its connections run a command again once on a new connection, as the app's own (chat.shards).
    assert url_host["retry"].get_retries() == sentinel_host["retry"].get_retries() == 1


def test_redis_url_alone_is_the_one_shard_and_redis_urls_wins():
    assert redis_shards("", "redis://127.0.0.1:6379/0") == [{"url": "redis://127.0.0.1:6379/0"}]
    assert redis_shards("redis://a:1/0 redis://b:2/0", "redis://c:3/0") == [{"url": "redis://a:1/0"},
                                                                             {"url": "redis://b:2/0"}]
    assert redis_shards("", "") == []


@pytest.mark.parametrize("entry", ["http://x:1/0", "redis+sentinel://h:1/", "redis+sentinel://h/shard0/0",
                                   "redis+sentinel://h:1/shard0/x"])
def test_a_malformed_entry_is_refused(entry):
    with pytest.raises(ValueError, match="REDIS_URLS"):
        redis_shards(entry)


def test_settings_refuse_a_malformed_entry_and_build_the_layer_from_every_shard():
    probe = ("import json, django; django.setup(); from django.conf import settings as s; "
             "print(json.dumps([s.REDIS_SHARDS, s.CHANNEL_LAYERS['default']['CONFIG']['hosts'], s.EMBEDDED], "
             "default=repr))")
    env = {"REDIS_URLS": f"redis://127.0.0.1:6380/0 redis+sentinel://{SENTINELS}/shard1/0", "DEBUG": "true"}
    done = subprocess.run([PYTHON, "-c", probe], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings", **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    shards, hosts, embedded = json.loads(done.stdout)
    assert len(shards) == 2 and hosts[1]["master_name"] == "shard1"
    assert hosts[0]["address"] == "redis://127.0.0.1:6380/0"
    assert not embedded
    refused = start(REDIS_URLS="memcached://127.0.0.1:11211", DEBUG="true")
    assert refused.returncode != 0 and "REDIS_URLS" in refused.stderr


def test_partitions_are_stable_and_map_to_shards_in_contiguous_ranges():
    # crc32 of the decimal id: the same in every process and release (never Python's salted hash()).
    assert [partition_of(room) for room in (1, 42, 10**12)] == [951, 136, 944]
    for shards in (1, 2, 3, 5):
        owners = [shard_of(p, shards) for p in range(PARTITIONS)]
        assert owners == sorted(owners) and set(owners) == set(range(shards))
    # Adding a shard moves whole partitions: a partition's rooms always share an owner.
    assert hash_tag(17) == "{p17}"


def test_rooms_spread_over_three_shards():
    counts = [0, 0, 0]
    for room in range(1, 3001):
        counts[shard_of(partition_of(room), 3)] += 1
    assert min(counts) > 800, counts
