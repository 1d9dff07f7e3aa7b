"""The local Redis shards of contract §7 (scripts/services.sh up redis-shards): `up` is idempotent
and quick once up; every primary has its replica connected and every Sentinel knows the three
masters and the other Sentinels; after a SENTINEL FAILOVER of shard1, `up` puts its master back on
6381 with the data it had; `down` stops every process; the single Redis on 6379 is never touched."""

import socket
import subprocess
import time

import pytest
import redis

from tests.support import ROOT, wait_until

pytestmark = pytest.mark.faults

PRIMARIES = (6380, 6381, 6382)
REPLICAS = (6390, 6391, 6392)
SENTINELS = (26380, 26381, 26382)
MASTERS = ("shard0", "shard1", "shard2")


def services(*args: str) -> float:
    """Run scripts/services.sh; returns the seconds it took."""
    started = time.monotonic()
    subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], check=True, timeout=240)
    return time.monotonic() - started


def node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def listening(port: int) -> bool:
    # A plain connect: redis-py retries a refused connection with backoff, seconds per port.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def master_port(sentinel: int, name: str) -> int | None:
    address = node(sentinel).sentinel_get_master_addr_by_name(name)
    return int(address[1]) if address else None


def assert_as_contract_says() -> None:
    for primary, replica in zip(PRIMARIES, REPLICAS, strict=True):
        info = node(primary).info("replication")
        assert info["role"] == "master" and info["connected_slaves"] == 1, (primary, info)
        assert (info["slave0"]["port"], info["slave0"]["state"]) == (replica, "online"), (primary, info)
        info = node(replica).info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == ("slave", primary, "up"), info
    for sentinel in SENTINELS:
        masters = node(sentinel).sentinel_masters()
        assert sorted(masters) == list(MASTERS), (sentinel, masters)
        for name, primary, replica in zip(MASTERS, PRIMARIES, REPLICAS, strict=True):
            master = masters[name]
            assert (master["port"], master["flags"], master["quorum"]) == (primary, "master", 2), (sentinel, master)
            assert master["num-other-sentinels"] == 2, (sentinel, master)
            assert master["down-after-milliseconds"] <= 1000 and master["failover-timeout"] <= 1000, master
            replicas = node(sentinel).sentinel_slaves(name)
            assert [(r["port"], r["flags"]) for r in replicas] == [(replica, "slave")], (sentinel, replicas)


def test_redis_shards_up_fails_a_moved_master_back_and_down_stops_everything():
    single = node(6379).info("server")["run_id"]
    services("up", "redis-shards")
    try:
        assert_as_contract_says()
        assert services("up", "redis-shards") < 10  # nothing to do: a few dozen round trips
        assert_as_contract_says()

        node(6381).set("before-failover", "kept")
        wait_until(lambda: node(6391).get("before-failover") == "kept", 10, message="the write on the replica")
        assert node(SENTINELS[0]).sentinel_failover("shard1")
        wait_until(lambda: all(master_port(s, "shard1") == 6391 for s in SENTINELS), 30, 0.1,
                   "every Sentinel to name 6391 shard1's master")
        wait_until(lambda: node(6391).info("replication")["role"] == "master", 10, message="6391 promoted")
        node(6391).set("during-failover", "kept too")

        services("up", "redis-shards")
        assert_as_contract_says()
        assert node(6381).mget("before-failover", "during-failover") == ["kept", "kept too"]
    finally:
        services("down", "redis-shards")
    assert not [port for port in (*PRIMARIES, *REPLICAS, *SENTINELS) if listening(port)]
    assert node(6379).info("server")["run_id"] == single
