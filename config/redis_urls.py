"""`REDIS_URLS` (contract §7) read into one spec per shard, in order; the settings call it."""

from urllib.parse import unquote, urlsplit

from chat.shards import reconnect_once

SENTINEL_SCHEME = "redis+sentinel"


def redis_shards(urls: str, single: str = "") -> list[dict]:
    """Space-separated entries, or `single` (REDIS_URL) alone as the one shard."""
    return [shard_spec(entry) for entry in (urls.split() or ([single] if single else []))]


def shard_spec(entry: str) -> dict:
    """`{"url": ...}` for `redis://` and `rediss://`; for `redis+sentinel://[:password@]h:p[,h:p...]/<master>/<db>`
    the Sentinels, the master's name, its db and password (the Sentinels themselves take none)."""
    parts = urlsplit(entry)
    if parts.scheme in ("redis", "rediss", "unix"):
        return {"url": entry}
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"REDIS_URLS: {entry!r} is neither redis://, rediss:// nor {SENTINEL_SCHEME}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) or None
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"REDIS_URLS: {entry!r} names a Sentinel without host:port ({host!r})")
        sentinels.append((name.strip("[]"), int(port)))
    master, _, db = parts.path.strip("/").partition("/")
    if not master or not (db or "0").isdigit():
        raise ValueError(f"REDIS_URLS: {entry!r} needs /<master-name>/<db> after the Sentinels")
    return {"sentinels": sentinels, "master_name": master, "db": int(db or 0), "password": password}


def layer_host(spec: dict) -> dict:
    """The shard as a channels-redis `hosts` entry (its Sentinel form for a Sentinel shard), whose
    connections retry a command once on a new connection as the app's own do."""
    if "url" in spec:
        return {"address": spec["url"], "retry": reconnect_once()}
    host = {"sentinels": spec["sentinels"], "master_name": spec["master_name"], "db": spec["db"],
            "retry": reconnect_once()}
    if spec["password"]:
        host["password"] = spec["password"]
    return host
