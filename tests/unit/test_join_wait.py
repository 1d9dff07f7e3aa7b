"""The retry hint of a socket shed past CHAT_MAX_PENDING_JOINS (chat.services.limits.join_wait)."""

from collections import deque

from django.test import override_settings

from chat.services.limits import join_wait


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_the_hint_is_the_time_the_pending_joins_need_at_the_latest_rate():
    ended = deque(100.0 + n * 0.01 for n in range(101))  # 100 joins a second
    assert join_wait(500, ended) == 5.0
    assert join_wait(50, ended) == 2  # never under the setting
    assert join_wait(100_000, ended) == 60.0  # nor over a minute


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_a_quiet_spell_before_a_storm_is_not_its_rate():
    """The latest joins ended while the instance filled up, then nothing for a while: the rate is
    theirs, not stretched over the quiet (which once sent a storm's sockets away for 40 s)."""
    ended = deque(100.0 + n * 0.004 for n in range(256))  # 250 joins a second, long ago
    assert join_wait(500, ended) == 2.0


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_without_a_rate_the_setting():
    assert join_wait(500, deque()) == 2 and join_wait(500, deque([5.0])) == 2
    assert join_wait(500, deque([5.0, 5.0])) == 2
