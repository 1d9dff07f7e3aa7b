"""The retry hint of a socket shed past CHAT_MAX_PENDING_JOINS (chat.services.limits.join_wait)."""

from collections import deque
from time import monotonic

from django.test import override_settings

from chat.services import limits
from chat.services.limits import join_wait


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_the_hint_is_the_time_the_pending_joins_need_at_the_recent_rate():
    ended = deque(100.0 + n * 0.01 for n in range(500))  # 100 joins a second, the last at 104.99
    assert join_wait(500, ended, 105.0) == 5.0
    assert join_wait(50, ended, 105.0) == 2  # never under the setting
    assert join_wait(100_000, ended, 105.0) == limits.JOIN_RETRY_MAX_SECONDS  # nor over the cap


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_a_storm_taken_in_slowly_at_first_sends_nobody_away_for_long():
    """A storm's first second: 500 joins under way, a dozen of them ended. At that rate they need 40 s,
    but the process ends hundreds a second once it has them in; a shed socket is not kept away for
    the whole estimate."""
    ended = deque(300.0 + n / 12 for n in range(24))  # 12 a second for two seconds
    assert join_wait(500, ended, 302.0) == 10.0


@override_settings(CHAT_JOIN_RETRY_SECONDS=15)
def test_an_operator_asking_for_a_longer_least_wait_gets_it():
    ended = deque(100.0 + n * 0.01 for n in range(500))
    assert join_wait(100_000, ended, 105.0) == 15


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_stragglers_and_quiet_spells_are_not_the_rate():
    """A burst long ago, then a few stragglers: the hint once came out at 40 s when a storm began
    after such an opening, and sent every shed socket away for that long."""
    ended = deque([*(100.0 + n * 0.004 for n in range(250)), 110.0, 115.0, 120.0])
    assert join_wait(500, ended, 130.0) == 2  # nothing in the last 5 s
    assert join_wait(500, ended, 121.0) == 2  # a straggler is no rate


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_a_storm_just_under_way_is_measured_from_its_first_ends():
    ended = deque(200.0 + n * 0.004 for n in range(125))  # 250 a second for half a second
    assert join_wait(500, ended, 200.5) == 4.0  # over the one second the rate is counted on at least


@override_settings(CHAT_JOIN_RETRY_SECONDS=2)
def test_without_a_rate_the_setting():
    assert join_wait(500, deque(), 10.0) == 2


@override_settings(CHAT_JOIN_RETRY_SECONDS=2, CHAT_MAX_PENDING_JOINS=500)
def test_a_socket_shed_by_a_server_that_queues_the_others_comes_back_soon(monkeypatch):
    """daphne holds the waiting sockets in its listen queue (config/daphne_listen.py): a socket shed
    anyway goes behind them when it retries, so it needs no hint of the whole queue's time."""
    now = monotonic()
    monkeypatch.setattr(limits, "_joining", 500)
    monkeypatch.setattr(limits, "_joined", deque(now - 4 + n * 0.04 for n in range(100)))  # 25 a second
    assert 5 <= limits.join_begin() <= 15  # 500 joins at 25 a second: 20 s, the cap of 10 s, spread
    assert 1 <= limits.join_begin(queued=True) <= 3
    assert limits._joining == 500  # a shed socket is not counted


@override_settings(CHAT_MAX_PENDING_JOINS=10)
def test_sockets_accepted_for_joins_hold_their_slots_until_they_reach_the_gate(monkeypatch):
    """daphne's accept rounds take only the free slots (config/daphne_listen.py); the sockets of a
    round reach the gate turns of the event loop later, and the next round must leave them room."""
    monkeypatch.setattr(limits, "_joining", 0)
    monkeypatch.setattr(limits, "_accepted", deque())
    for _ in range(4):
        limits.connection_accepted()
    assert limits.joins_free() == 6
    limits.connection_arrived()  # one of them reaches the application, and the gate: a join now
    assert limits.join_begin() is None
    assert limits.joins_free() == 6
    assert limits.joins_in_transit() == 3
    limits.connection_arrived()  # a plain HTTP request: no join
    assert limits.joins_free() == 7


def test_a_connection_the_application_never_sees_stops_holding_a_slot(monkeypatch):
    monkeypatch.setattr(limits, "_accepted", deque([monotonic() - 2 * limits.ACCEPT_TRANSIT_SECONDS, monotonic()]))
    assert limits.joins_in_transit() == 1  # its client left before its request
