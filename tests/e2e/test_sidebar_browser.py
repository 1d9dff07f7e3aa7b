"""The sidebar in a real browser (Debian's chromium through Playwright): two users on two daphne
instances with real Redis, Kafka and Postgres. Every wait is on a condition.

Headless pages are always visible and Playwright cannot see notifications, so an init script
stubs `document.visibilityState` (a page sets `window.__visibility`) and `window.Notification`
(each one made is recorded in `window.__notifications`); the permission is granted to the context."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import make_room
from tests.support import ARTIFACTS

pytestmark = pytest.mark.browser

WAIT_MS = 15_000

STUBS = """
window.__notifications = [];
window.__visibility = "visible";
Object.defineProperty(Document.prototype, "visibilityState", { get: () => window.__visibility, configurable: true });
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options = {}) { window.__notifications.push({ title, ...options }); }
};
"""


def open_page(browser, base_url: str, user, path: str, *, width: int = 1100) -> Page:
    context = browser.new_context(viewport={"width": width, "height": 760}, permissions=["notifications"])
    context.add_init_script(STUBS)
    context.add_cookies([{"name": "sessionid", "value": user.cookie, "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    page.goto(f"{base_url}{path}")
    page.wait_for_function("window.chatSidebar && window.chatSidebar.loaded", timeout=WAIT_MS)
    return page


def open_room(browser, base_url: str, user, room, **kwargs) -> Page:
    page = open_page(browser, base_url, user, f"/rooms/{room.slug}/", **kwargs)
    page.wait_for_function("window.chat && window.chat.connected", timeout=WAIT_MS)
    return page


def sidebar(page: Page):
    return page.get_by_role("navigation", name="Conversations")


def conversation(page: Page, name: str):
    """The sidebar's link whose accessible name is exactly `name`."""
    return sidebar(page).get_by_role("link", name=name, exact=True)


def send(page: Page, body: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(body)
    box.press("Enter")


def test_a_message_elsewhere_bumps_the_sidebar_and_a_mention_notifies(browser, web_a, web_b, worker, alice, bob):
    room_b, room_c = make_room(alice), make_room(alice)
    page_a = open_room(browser, web_a.url, alice, room_c)
    page_b = open_room(browser, web_b.url, bob, room_b)
    expect(conversation(page_a, room_b.name)).to_be_visible(timeout=WAIT_MS)
    expect(conversation(page_a, room_c.name)).to_have_attribute("aria-current", "page")

    send(page_b, "news in B")
    news = conversation(page_a, f"{room_b.name}, 1 unread")
    expect(news).to_be_visible(timeout=WAIT_MS)
    expect(news).to_have_css("font-weight", "700")
    expect(page_a).to_have_title(re.compile(rf"^\(1\) {re.escape(room_c.name)}"))
    assert page_a.evaluate("window.__notifications.length") == 0

    # The tab goes to the background; a mention lights up the count and notifies.
    page_a.evaluate("window.__visibility = 'hidden'")
    send(page_b, f"@{alice.username} can you look?")
    expect(conversation(page_a, f"{room_b.name}, 2 unread, 1 mention")).to_be_visible(timeout=WAIT_MS)
    page_a.wait_for_function("window.__notifications.length === 1", timeout=WAIT_MS)
    notification = page_a.evaluate("window.__notifications[0]")
    assert room_b.name in notification["title"], notification
    expect(page_a).to_have_title(re.compile(rf"^\(2\) {re.escape(room_c.name)}"))
    # Rooms with news come first.
    first = sidebar(page_a).get_by_role("link").first
    expect(first).to_have_attribute("href", f"/rooms/{room_b.slug}/")

    ARTIFACTS.mkdir(exist_ok=True)
    page_a.screenshot(path=str(ARTIFACTS / "sidebar.png"))

    # A reload counts the same from the server (the worker stored the mention).
    page_a.reload()
    page_a.wait_for_function("window.chatSidebar && window.chatSidebar.loaded", timeout=WAIT_MS)
    expect(conversation(page_a, f"{room_b.name}, 2 unread, 1 mention")).to_be_visible(timeout=WAIT_MS)
    page_a.context.close()
    page_b.context.close()


def test_a_dm_started_from_the_online_list_appears_in_both_sidebars(browser, web_a, web_b, worker, alice, bob):
    room = make_room(alice)
    page_a = open_room(browser, web_a.url, alice, room)
    page_b = open_room(browser, web_b.url, bob, room)
    online = page_b.get_by_role("list", name="Online")
    expect(online).to_contain_text(alice.username, timeout=WAIT_MS)
    online.get_by_role("button", name=f"Message {alice.username} directly").click()
    page_b.wait_for_url(re.compile(r"/rooms/dm-"), timeout=WAIT_MS)
    page_b.wait_for_function("window.chat && window.chat.connected", timeout=WAIT_MS)
    expect(conversation(page_b, alice.username)).to_have_attribute("aria-current", "page", timeout=WAIT_MS)

    expect(conversation(page_a, bob.username)).to_be_visible(timeout=WAIT_MS)  # live, no reload
    send(page_b, "just between us")
    # In a DM every message of the other member is a mention.
    expect(conversation(page_a, f"{bob.username}, 1 unread, 1 mention")).to_be_visible(timeout=WAIT_MS)
    expect(page_a).to_have_title(re.compile(r"^\(1\) "))
    page_a.context.close()
    page_b.context.close()


def test_the_home_page_sidebar_is_live(browser, web_a, web_b, worker, alice, bob):
    room = make_room(alice)
    page_a = open_page(browser, web_a.url, alice, "/")
    expect(conversation(page_a, room.name)).to_be_visible(timeout=WAIT_MS)
    page_a.wait_for_function("window.chatSidebar.rooms.size > 0", timeout=WAIT_MS)
    page_b = open_room(browser, web_b.url, bob, room)
    send(page_b, "hello from bob")
    expect(conversation(page_a, f"{room.name}, 1 unread")).to_be_visible(timeout=WAIT_MS)
    expect(page_a).to_have_title(re.compile(r"^\(1\) "))
    page_a.context.close()
    page_b.context.close()


def test_on_a_phone_the_sidebar_folds_behind_a_button(browser, web_a, worker, alice):
    room, other = make_room(alice), make_room(alice)
    page = open_room(browser, web_a.url, alice, room, width=390)
    toggle = sidebar(page).get_by_role("button", name="Conversations")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(conversation(page, other.name)).to_be_hidden()
    width = page.evaluate("document.querySelector('.room').getBoundingClientRect().width")
    assert width >= 380, f"the room is {width}px wide on a 390px screen"
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(conversation(page, other.name)).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sidebar-phone.png"))
    conversation(page, other.name).click()
    page.wait_for_url(re.compile(f"/rooms/{other.slug}/"), timeout=WAIT_MS)
    page.context.close()
