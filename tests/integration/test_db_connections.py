"""A web process's database connections: its WebSocket path keeps one and reuses it, so a socket's
join does not pay for a new connection; HTTP requests leave none behind."""

import os

import httpx
import pytest

from tests.conftest import child_env
from tests.support import WebServer, chat_socket, pg_query, unique, wait_until


def backends(application_name: str) -> set[int]:
    """Postgres backends (pids) connected under this application name."""
    return {pid for (pid,) in pg_query(os.environ["DATABASE_URL"],
                                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                        [application_name])}


@pytest.fixture
def tagged_web():
    """A web instance whose database connections carry a name of their own."""
    name = unique("dbconn")
    server = WebServer(name, child_env(DATABASE_URL=f"{os.environ['DATABASE_URL']}?application_name={name}")).start()
    yield server, name
    server.stop()


async def test_socket_joins_reuse_one_connection_and_http_requests_keep_none(tagged_web, alice, room):
    server, name = tagged_web
    for _ in range(5):
        async with chat_socket(server, room.slug, alice.cookie):
            pass
    kept = backends(name)
    assert len(kept) == 1, f"the WebSocket path holds {len(kept)} connections, not one"
    for _ in range(5):
        async with chat_socket(server, room.slug, alice.cookie):
            pass
    assert backends(name) == kept, "the joins opened a new connection instead of reusing the kept one"

    async with httpx.AsyncClient(base_url=server.url, cookies={"sessionid": alice.cookie}) as client:
        for _ in range(10):
            assert (await client.get("/api/rooms/")).status_code == 200
    # Each request ran on a thread of its own: its connection must be closed, not left to linger.
    wait_until(lambda: backends(name) == kept, 5, message="only the WebSocket path's connection to remain")
