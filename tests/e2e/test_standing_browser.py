"""The user's own view of their standing, in a real browser (issue 26): staff act on one instance
while the user's page is on the other. Muted: the composer says until when and is off, and comes
back live on unmute or when the time passes. Banned: the page says so and stops reconnecting."""

import time
from datetime import UTC, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from chat.models import ChatProfile
from chat.services import moderation
from tests.e2e.test_room_browser import WAIT_MS, wait_connected
from tests.integration.test_moderation import admin_action, staff_user

pytestmark = pytest.mark.browser

NO_RECONNECT_WATCH_S = 4  # how long a banned page is watched for a new socket (its backoff starts under 0.5 s)


def open_room_in_utc(browser, base_url: str, user, room) -> Page:
    """The page in a fixed time zone and locale, so the test knows how it writes a time."""
    context = browser.new_context(viewport={"width": 1100, "height": 760}, timezone_id="UTC", locale="en-GB")
    context.add_cookies([{"name": "sessionid", "value": user.cookie, "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    page.sockets = []
    page.on("websocket", lambda socket: page.sockets.append(socket))  # every socket the page opens
    page.goto(f"{base_url}/rooms/{room.slug}/")
    return page


def composer(page: Page):
    return page.get_by_role("textbox", name="Message"), page.get_by_role("button", name="Send", exact=True)


def standing_note(page: Page):
    return page.locator("#composer-standing")


def muted_until(user):
    return ChatProfile.objects.get(user=user).muted_until.astimezone(UTC)


def test_muted_user_sees_until_when_and_gets_the_composer_back_live(browser, web_a, web_b, alice, room):
    staff = staff_user()
    profile = moderation.profile_for(alice)
    page = open_room_in_utc(browser, web_b.url, alice, room)
    wait_connected(page)
    box, send = composer(page)
    expect(box).to_be_enabled()
    expect(standing_note(page)).to_be_hidden()

    admin_action(web_a, staff, "chatprofile", "mute_hour", [profile.pk])
    until = muted_until(alice)
    expect(standing_note(page)).to_be_visible(timeout=WAIT_MS)
    expect(standing_note(page)).to_contain_text("You are muted until")
    expect(standing_note(page)).to_contain_text(f"{until:%H:%M}")
    expect(box).to_be_disabled()
    expect(send).to_be_disabled()

    admin_action(web_a, staff, "chatprofile", "unmute", [profile.pk])
    expect(standing_note(page)).to_be_hidden(timeout=WAIT_MS)
    expect(box).to_be_enabled()
    expect(send).to_be_enabled()

    admin_action(web_a, staff, "chatprofile", "mute_indefinitely", [profile.pk])
    expect(standing_note(page)).to_have_text("You are muted until further notice", timeout=WAIT_MS)
    expect(box).to_be_disabled()

    page.reload()  # a new page hears it from hello
    wait_connected(page)
    expect(standing_note(page)).to_have_text("You are muted until further notice", timeout=WAIT_MS)
    expect(composer(page)[0]).to_be_disabled()

    # A short mute, through the moderation service itself: the page turns the composer back on
    # when the time passes, with no word from the server.
    moderation.user_mute(actor=staff, user=alice, until=timezone.now() + timedelta(seconds=4), reason="cool down")
    until = muted_until(alice)
    expect(standing_note(page)).to_contain_text(f"You are muted until {until:%H:%M}", timeout=WAIT_MS)
    expect(composer(page)[0]).to_be_disabled()
    expect(standing_note(page)).to_be_hidden(timeout=WAIT_MS)
    assert timezone.now() >= until - timedelta(seconds=1), "the composer came back before the mute ended"
    expect(composer(page)[0]).to_be_enabled()
    page.context.close()


def test_banned_user_page_says_so_and_stops_reconnecting(browser, web_a, web_b, alice, room):
    staff = staff_user()
    page = open_room_in_utc(browser, web_b.url, alice, room)
    wait_connected(page)
    assert len(page.sockets) == 1
    connection = page.get_by_role("status").filter(has_text="Connected")
    expect(connection).to_be_visible()

    admin_action(web_a, staff, "chatprofile", "ban", [moderation.profile_for(alice).pk])
    expect(page.locator("#connection")).to_have_text("Your account is banned from this chat.", timeout=WAIT_MS)
    expect(composer(page)[0]).to_be_disabled()
    expect(composer(page)[1]).to_be_disabled()
    assert page.evaluate("window.chat.banned") is True
    assert_stays_away(page, sockets=1)

    page.reload()  # the page of a banned user, from the start: refused at connect, it says why
    expect(page.locator("#connection")).to_have_text("Your account is banned from this chat.", timeout=WAIT_MS)
    expect(composer(page)[0]).to_be_disabled()
    assert_stays_away(page, sockets=2)
    page.context.close()


def assert_stays_away(page: Page, *, sockets: int) -> None:
    """No new socket and no reconnecting state for a while (a negative: it can only be watched)."""
    deadline = time.monotonic() + NO_RECONNECT_WATCH_S
    while time.monotonic() < deadline:
        assert len(page.sockets) == sockets, "the banned page opened another socket"
        assert page.evaluate("window.chat.state") == "offline"
        assert page.locator("#connection").get_attribute("data-state") == "banned"
        page.wait_for_timeout(250)
