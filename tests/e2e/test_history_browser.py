"""The web client asks the socket to replay only from the newest message it shows, and loads the rest
of the history over HTTP: never `?after=0` after a failed history load, and never a replay from an
old message when it opens a search hit (`?at=`). In a real browser on a room with a long history."""

import re
import secrets

import pytest
from playwright.sync_api import Page, expect

from chat.models import Message
from tests.e2e.test_room_browser import WAIT_MS, log, wait_connected

pytestmark = pytest.mark.browser

HISTORY = 400
HISTORY_API = re.compile(r".*/api/rooms/[^/]+/messages/.*")


@pytest.fixture
def long_room(room, alice):
    """A room of HISTORY stored messages (written directly, as the worker would have)."""
    Message.objects.bulk_create([Message(room=room, seq=seq, author=alice, body=f"old {seq} {secrets.token_hex(4)}")
                                 for seq in range(1, HISTORY + 1)])
    return room


def open_page(browser, base_url: str, user, path: str, *, fail_history: bool = False) -> tuple[Page, list[str]]:
    """The page at `path`, and the URLs of the sockets it opens; with `fail_history`, every history
    request fails until the route is taken away (page.unroute)."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.add_cookies([{"name": "sessionid", "value": user.cookie, "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    if fail_history:
        page.route(HISTORY_API, lambda route: route.fulfill(status=503, body="{}"))
    page.goto(base_url + path)
    wait_connected(page)
    return page, sockets


def seqs_shown(page: Page) -> list[int]:
    return [int(s) for s in log(page).locator("li.message").evaluate_all("els => els.map(e => e.dataset.seq)")]


def test_a_failed_history_load_goes_live_without_replaying_the_room_then_loads_history_on_demand(
        browser, web_a, worker, alice, long_room):
    page, sockets = open_page(browser, web_a.url, alice, f"/rooms/{long_room.slug}/", fail_history=True)
    assert len(sockets) == 1 and "after=" not in sockets[0], sockets
    assert seqs_shown(page) == []
    page.unroute(HISTORY_API)
    page.get_by_role("button", name="Load older messages").click()
    expect(log(page).locator("li.message")).to_have_count(50, timeout=WAIT_MS)
    assert seqs_shown(page) == list(range(HISTORY - 49, HISTORY + 1))
    page.context.close()


def test_a_search_hit_opens_at_the_message_and_resumes_after_the_newest_one(browser, web_a, worker, alice,
                                                                          long_room):
    page, sockets = open_page(browser, web_a.url, alice, f"/rooms/{long_room.slug}/?at=30")
    assert sockets == [re.sub(r"^http", "ws", web_a.url) + f"/ws/chat/{long_room.slug}/?after={HISTORY}"]
    target = log(page).locator('li.message[data-seq="30"]')
    expect(target).to_have_class(re.compile(r"\bhighlight\b"))
    shown = seqs_shown(page)
    assert shown == [*range(5, 55), *range(HISTORY - 49, HISTORY + 1)], shown
    # The messages between the two come over HTTP, a page each time the gap comes into view.
    gap = log(page).get_by_role("button", name="Load newer messages")
    while gap.count():
        gap.click()
        page.wait_for_function(f"document.querySelectorAll('#messages li.message').length > {len(shown)}",
                               timeout=WAIT_MS)
        shown = seqs_shown(page)
    assert shown == list(range(5, HISTORY + 1))
    page.context.close()
