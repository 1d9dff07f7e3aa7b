"""Moderation in a real browser as a staff member (issue 26): ban a user from the user list while
they are connected on the other instance (their socket, held by a client of the test's own, closes
with 4403); mute a reported message's author from the report; the desk lists the open report and
then the action taken."""

import asyncio
import re
import threading
import uuid

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from chat import permissions
from chat.models import ChatProfile, Message, ModerationAction, Report
from tests.conftest import make_user, session_cookie
from tests.e2e.test_room_browser import WAIT_MS
from tests.support import chat_socket, wait_until

pytestmark = pytest.mark.browser


class HeldSocket:
    """A user's socket held open on a thread of its own (the browser's API is synchronous): it
    waits until the server closes it and keeps the close code."""

    def __init__(self, server, slug: str, cookie: str) -> None:
        self.code: int | None = None
        self.error: BaseException | None = None
        self.open = threading.Event()
        self.closed = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold(server, slug, cookie)), daemon=True)
        self._thread.start()
        assert self.open.wait(15) and self.error is None, self.error

    async def _hold(self, server, slug: str, cookie: str) -> None:
        try:
            async with chat_socket(server, slug, cookie) as sock:
                self.open.set()
                self.code = await sock.close_code(timeout=120)
        except BaseException as exc:  # whatever it is, the test reports it
            self.error = exc
            self.open.set()
        finally:
            self.closed.set()


def staff_page(browser, base_url: str, path: str) -> Page:
    staff = make_user("staff", is_staff=True, is_superuser=True)
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.add_cookies([{"name": "sessionid", "value": session_cookie(staff), "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    page.staff = staff
    page.goto(f"{base_url}{path}")
    return page


def test_ban_from_the_user_list_closes_the_users_socket_on_the_other_instance(browser, web_a, web_b, alice,
                                                                              room):
    held = HeldSocket(web_b, room.slug, alice.cookie)
    page = staff_page(browser, web_a.url, f"/admin/auth/user/?q={alice.username}")

    page.locator(f'input[name="_selected_action"][value="{alice.pk}"]').check()
    page.locator('select[name="action"]').select_option(label="Ban")
    page.locator('button[name="index"]').click()
    expect(page.get_by_role("heading", name="Ban?")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#content")).to_contain_text(alice.username)
    page.get_by_label("Reason").fill("spam links everywhere")
    page.get_by_role("button", name="Ban", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text(f"Banned: {alice.username}", timeout=WAIT_MS)
    expect(page.locator("#result_list")).to_contain_text("banned")

    assert held.closed.wait(5), "the banned user's socket is still open"
    assert held.code == 4403
    entry = ModerationAction.objects.get(action="ban", target_user=alice)
    assert (entry.actor, entry.reason) == (page.staff, "spam links everywhere")
    page.context.close()


def test_mute_from_a_report_and_the_desk_shows_it_open_then_the_action(browser, web_a, alice, bob, room):
    body = "buy cheap " + uuid.uuid4().hex[:8]
    message = Message.objects.create(room=room, seq=1, author=bob, body=body, created_at=timezone.now())
    reason = "advertising " + uuid.uuid4().hex[:6]
    report = Report.objects.create(message=message, reporter=alice, reason=reason)

    page = staff_page(browser, web_a.url, "/admin/")
    page.get_by_role("link", name="Moderation desk").click()
    reports = page.locator(".module", has=page.get_by_role("heading", name="Open reports, oldest first"))
    row = reports.locator("tr", has_text=reason)
    expect(row).to_contain_text(body, timeout=WAIT_MS)
    expect(row).to_contain_text(bob.username)

    row.get_by_role("link", name=re.compile(r"ago$")).click()
    expect(page).to_have_url(re.compile(rf"/admin/chat/report/{report.pk}/change/$"))
    page.get_by_role("link", name="Mute the author for 1 hour").click()
    expect(page.get_by_role("heading", name="Mute the author for 1 hour?")).to_be_visible(timeout=WAIT_MS)
    page.get_by_label("Reason").fill("no ads here")
    page.get_by_role("button", name="Mute the author for 1 hour", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("done", timeout=WAIT_MS)

    wait_until(lambda: Report.objects.get(pk=report.pk).resolved, 5, message="the report to be resolved")
    assert permissions.is_muted(ChatProfile.objects.get(user=bob).muted_until)

    page.goto(f"{web_a.url}/admin/chat/desk/")
    expect(reports).not_to_contain_text(reason)
    restricted = page.locator(".module", has=page.get_by_role("heading", name="Banned or muted now"))
    expect(restricted.locator("tr", has_text=bob.username)).to_contain_text("muted for")
    recent = page.locator(".module", has=page.get_by_role("heading", name=re.compile("Recent moderation actions")))
    expect(recent.locator("tr", has_text="no ads here")).to_contain_text("mute")
    expect(recent.locator("tr", has_text="no ads here")).to_contain_text(page.staff.username)
    page.context.close()
