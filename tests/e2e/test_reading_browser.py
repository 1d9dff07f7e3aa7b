"""Reading comfort in a real browser: day separators, consecutive messages of one author grouped,
the "edited" marker, the "New messages" divider at the first unread message with its jump button,
and the reader's place kept while older pages load above."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from chat.models import Message, ReadState
from tests.e2e.test_room_browser import WAIT_MS, log, send, wait_connected
from tests.support import ARTIFACTS

pytestmark = pytest.mark.browser


def local_noon_timezone() -> str:
    """A fixed-offset zone where it is about noon now, so "today" and "yesterday" cannot flip
    between writing the messages and reading them (the browser's days are local)."""
    shift = 12 - datetime.now(UTC).hour  # hours ahead of UTC; Etc/GMT signs are inverted
    return "Etc/GMT" + (f"-{shift}" if shift > 0 else f"+{-shift}" if shift < 0 else "")


def open_as(browser, base_url: str, user, room, *, timezone: str = "UTC") -> Page:
    context = browser.new_context(viewport={"width": 1100, "height": 760}, timezone_id=timezone)
    context.add_cookies([{"name": "sessionid", "value": user.cookie, "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    page.goto(f"{base_url}/rooms/{room.slug}/")
    wait_connected(page)
    return page


def store(room, rows: list[tuple]) -> None:
    """Messages as the worker would have stored them: (seq, author, body, created_at[, edited_at])."""
    Message.objects.bulk_create([Message(room=room, seq=seq, author=author, body=body, created_at=at,
                                         edited_at=rest[0] if rest else None)
                                 for seq, author, body, at, *rest in rows])


def classes(page: Page) -> list[tuple[str, str]]:
    """The list's rows in order: ("day", label), ("new", ...) or ("message"/"continued", body)."""
    return log(page).locator("li").evaluate_all("""els => els.map(li =>
        li.classList.contains("day-divider") ? ["day", li.textContent]
        : li.classList.contains("new-divider") ? ["new", li.textContent]
        : [li.classList.contains("continued") ? "continued" : "message", li.querySelector(".body").textContent])""")


def test_day_separators_grouping_and_the_edited_marker(browser, web_a, worker, alice, bob, room):
    now = datetime.now(UTC).replace(microsecond=0)
    days_ago = now - timedelta(days=5)
    yesterday = now - timedelta(days=1)
    earlier = now - timedelta(minutes=12)
    store(room, [
        (1, alice, "long ago", days_ago),
        (2, alice, "yesterday one", yesterday),
        (3, alice, "yesterday two", yesterday + timedelta(minutes=2)),
        (4, alice, "today one", earlier),
        (5, alice, "today two", earlier + timedelta(minutes=1), earlier + timedelta(minutes=3)),
        (6, alice, "after a break", earlier + timedelta(minutes=9)),
        (7, bob, "bob answers", earlier + timedelta(minutes=10)),
        (8, bob, "bob again", earlier + timedelta(minutes=11)),
    ])
    ReadState.objects.create(user=bob, room=room, seq=8)
    page = open_as(browser, web_a.url, bob, room, timezone=local_noon_timezone())
    expect(log(page).locator("li.message")).to_have_count(8, timeout=WAIT_MS)
    rows = classes(page)
    assert rows[0][0] == "day" and rows[0][1] not in ("Today", "Yesterday") and rows[0][1], rows
    assert rows[1:] == [
        ["message", "long ago"],
        ["day", "Yesterday"],
        ["message", "yesterday one"],
        ["continued", "yesterday two"],
        ["day", "Today"],
        ["message", "today one"],
        ["continued", "today two"],
        ["message", "after a break"],
        ["message", "bob answers"],
        ["continued", "bob again"],
    ], rows
    grouped = log(page).locator("li.message.continued").first
    expect(grouped.locator(".author")).not_to_be_in_viewport()  # kept for screen readers only
    expect(log(page).locator("li.message").first.locator(".author")).to_be_visible()
    expect(page.get_by_role("separator", name="Today")).to_have_count(1)
    expect(log(page).locator("li.message", has_text="today two").locator(".edited")).to_have_text("(edited)")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "days-and-groups.png"))

    # A live message of the same author a moment later joins the group; a new day separator is not added.
    send(page, "bob live")
    expect(log(page).locator("li.message").last).to_have_class(re.compile(r"\bcontinued\b"), timeout=WAIT_MS)
    expect(page.get_by_role("separator", name="Today")).to_have_count(1)
    page.context.close()


def many(room, author, count: int) -> None:
    start = datetime.now(UTC) - timedelta(hours=3)
    store(room, [(seq, author, f"history {seq}", start + timedelta(minutes=seq)) for seq in range(1, count + 1)])


def test_new_messages_divider_at_the_first_unread_and_the_jump_button(browser, web_a, worker, alice, bob, room):
    many(room, alice, 120)
    ReadState.objects.create(user=bob, room=room, seq=40)
    page = open_as(browser, web_a.url, bob, room)
    divider = page.get_by_role("separator", name="New messages")
    expect(divider).to_have_count(1)
    # The divider stands right above the first unread message, loaded although it is not on the newest page.
    after = divider.evaluate("el => el.nextElementSibling.dataset.seq")
    assert after == "41"
    jump = page.get_by_role("button", name="Jump to first unread")
    expect(jump).to_be_visible()
    expect(divider).not_to_be_in_viewport()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "unread-jump.png"))
    jump.click()
    expect(divider).to_be_in_viewport()
    expect(jump).to_be_hidden()
    page.context.close()


def test_older_pages_load_above_without_moving_what_the_reader_sees(browser, web_a, worker, alice, bob, room):
    many(room, alice, 160)
    page = open_as(browser, web_a.url, bob, room)
    messages = log(page).locator("li.message")
    expect(messages).to_have_count(50)
    # Scroll to the top: the next page loads above; the message that was on top stays where it was.
    before = page.evaluate("""() => {
        const list = document.getElementById("messages");
        list.scrollTop = 0;
        const top = list.querySelector("li.message");
        return [top.dataset.seq, top.getBoundingClientRect().top];
    }""")
    expect(messages).to_have_count(100, timeout=WAIT_MS)
    page.wait_for_function("document.getElementById('messages').scrollTop > 0", timeout=WAIT_MS)
    seq, top = before
    now = log(page).locator(f'li.message[data-seq="{seq}"]').evaluate("el => el.getBoundingClientRect().top")
    assert abs(now - top) <= 2, (top, now)
    assert seq == "111"
    page.context.close()
