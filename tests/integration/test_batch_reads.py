"""Batched database reads (chat.batching.ThreadBatch, as a storm of joins makes them) against a real
Postgres whose backend is killed under them: a connection idle past the window is health-checked
and replaced before the batch runs; one broken while batches keep it busy fails one batch, and
the next batch reconnects."""

import os

import pytest
from django.db import OperationalError, connection

from chat import batching
from chat.batching import ThreadBatch
from tests.support import pg_query, wait_until


def _backend_pids(requests: list) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return [pid] * len(requests)


def _database(statement: str, params: list) -> list:
    return pg_query(os.environ["DATABASE_URL"], statement, params)


def _kill(pid: int) -> None:
    """Ends the backend, as a Postgres restart or a proxy's idle timeout would, and waits until it is gone."""
    assert _database("SELECT pg_terminate_backend(%s)", [pid]) == [(True,)]
    wait_until(lambda: not _database("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]), 10,
               message=f"backend {pid} to end")


async def test_a_connection_idle_past_the_window_is_checked_and_replaced_before_the_batch(monkeypatch):
    monkeypatch.setattr(batching, "HEALTHY_FOR_SECONDS", 0.0)  # every batch comes after an idle spell
    read = ThreadBatch(_backend_pids)
    pid = await read(None)
    _kill(pid)
    assert await read(None) != pid  # no error: the health check found it dead and Django reconnected


async def test_a_connection_broken_while_batches_keep_it_busy_fails_one_batch_and_the_next_reconnects(monkeypatch):
    monkeypatch.setattr(batching, "HEALTHY_FOR_SECONDS", 600.0)
    read = ThreadBatch(_backend_pids)
    pid = await read(None)
    assert await read(None) == pid  # the same connection, used again
    _kill(pid)
    with pytest.raises(OperationalError):  # no SELECT 1 first: the batch's own query met the dead connection
        await read(None)
    assert await read(None) != pid
