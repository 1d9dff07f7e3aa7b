"""How long a room's presence changes gather before one frame goes out (presence.coalesce_window)."""

from collections import deque
from types import SimpleNamespace

from django.test import override_settings

from chat import drain
from chat.services import limits
from chat.services.presence import coalesce_window


@override_settings(CHAT_MAX_PENDING_JOINS=500, CHAT_PRESENCE_COALESCE_SECONDS=1,
                   CHAT_PRESENCE_CROWDED_COALESCE_SECONDS=5)
def test_presence_waits_longer_while_a_storm_of_joins_fills_the_process(monkeypatch):
    monkeypatch.setattr(limits, "_joining", 0)
    monkeypatch.setattr(limits, "_joined", deque())
    for _ in range(49):
        assert limits.join_begin() is None
    assert coalesce_window() == 1  # a few joins at once: the usual window
    assert limits.join_begin() is None  # the 50th: a tenth of the limit
    assert coalesce_window() == 5
    monkeypatch.setattr(limits, "_joining", 49)
    assert coalesce_window() == 1  # the storm is over as soon as the joins are


@override_settings(CHAT_MAX_PENDING_JOINS=500, CHAT_PRESENCE_COALESCE_SECONDS=1,
                   CHAT_PRESENCE_CROWDED_COALESCE_SECONDS=5)
def test_presence_waits_longer_while_joins_end_fast(monkeypatch):
    """uvicorn queues a storm's handshakes before they count as joins: the rate they end at tells."""
    now = 1000.0  # a clock that stands still: a busy host's pause must not age the joins
    monkeypatch.setattr(limits, "time", SimpleNamespace(monotonic=lambda: now))
    monkeypatch.setattr(limits, "_joining", 3)
    monkeypatch.setattr(limits, "_joined", deque(now - 0.9 + n * 0.018 for n in range(49)))
    assert coalesce_window() == 1  # 49 in the last second
    limits.join_end()
    assert coalesce_window() == 5  # the 50th
    monkeypatch.setattr(limits, "_joined", deque(now - 2.5 + n * 0.018 for n in range(50)))
    assert coalesce_window() == 1  # as many, but over a second ago


@override_settings(CHAT_MAX_PENDING_JOINS=500, CHAT_PRESENCE_COALESCE_SECONDS=1,
                   CHAT_PRESENCE_CROWDED_COALESCE_SECONDS=5)
def test_a_draining_process_announces_its_leaves_at_once_even_in_a_storm(monkeypatch):
    monkeypatch.setattr(limits, "_joining", 500)
    monkeypatch.setattr(drain, "_draining", True)
    assert coalesce_window() == 0
