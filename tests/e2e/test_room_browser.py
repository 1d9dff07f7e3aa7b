"""The web client in a real browser (Debian's chromium through Playwright), across two daphne
instances on real Redis, Kafka and Postgres with a worker. Every wait is on a condition."""

import asyncio
import re

import pytest
from playwright.sync_api import Page, expect

from chat.models import Message
from tests.conftest import RUN, child_env
from tests.support import ARTIFACTS, FailoverProxy, WebServer, wait_until

pytestmark = pytest.mark.browser

WAIT_MS = 15_000


def open_room(browser, base_url: str, user, room) -> Page:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.add_cookies([{"name": "sessionid", "value": user.cookie, "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    page.goto(f"{base_url}/rooms/{room.slug}/")
    wait_connected(page)
    return page


def wait_connected(page: Page) -> None:
    page.wait_for_function("window.chat && window.chat.connected", timeout=WAIT_MS)


def log(page: Page):
    return page.get_by_role("log", name="Messages")


def online(page: Page):
    return page.get_by_role("list", name="Online")


def send(page: Page, body: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(body)
    box.press("Enter")


def bubble(page: Page, body: str):
    exactly = re.compile(f"^{re.escape(body)}$")
    return log(page).locator("li.message").filter(has=page.locator(".body", has_text=exactly))


def test_two_users_on_two_instances_chat_both_ways(browser, web_a, web_b, worker, alice, bob, room):
    page_a = open_room(browser, web_a.url, alice, room)
    page_b = open_room(browser, web_b.url, bob, room)

    expect(online(page_a)).to_contain_text(bob.username, timeout=WAIT_MS)
    expect(online(page_b)).to_contain_text(alice.username, timeout=WAIT_MS)
    expect(page_a.get_by_role("status").first).to_have_text("Connected")

    # Typing crosses instances and clears itself once the message goes.
    page_b.get_by_role("textbox", name="Message").fill("hello al")
    page_b.get_by_role("textbox", name="Message").press("i")
    expect(page_a.locator("#typing")).to_have_text(f"{bob.username} is typing…", timeout=WAIT_MS)
    page_b.get_by_role("textbox", name="Message").fill("hello alice <b>not bold</b>")
    page_b.get_by_role("textbox", name="Message").press("Enter")
    expect(bubble(page_a, "hello alice <b>not bold</b>")).to_have_count(1, timeout=WAIT_MS)
    expect(page_a.locator("#typing")).to_have_text("", timeout=WAIT_MS)
    assert page_a.locator("#messages b").count() == 0, "a body was inserted as HTML"
    # The sender's bubble goes from pending to sent once Kafka has the message.
    expect(bubble(page_b, "hello alice <b>not bold</b>")).to_have_attribute("data-status", "sent", timeout=WAIT_MS)

    send(page_a, "hi bob")
    send(page_a, "this one goes away")
    expect(bubble(page_b, "hi bob")).to_have_count(1, timeout=WAIT_MS)
    expect(bubble(page_b, "this one goes away")).to_have_count(1, timeout=WAIT_MS)
    expect(bubble(page_a, "this one goes away")).to_have_attribute("data-status", "sent", timeout=WAIT_MS)

    # Edit: the author's inline form; the other instance's client shows the new body.
    bubble(page_a, "hi bob").get_by_role("button", name="Edit").click()
    page_a.get_by_role("textbox", name="Edit message").fill("hi bob (fixed)")
    page_a.get_by_role("button", name="Save").click()
    expect(bubble(page_b, "hi bob (fixed)")).to_have_count(1, timeout=WAIT_MS)
    expect(bubble(page_b, "hi bob (fixed)").locator(".edited")).to_have_text("(edited)")

    # Delete: gone for the other user; the other user cannot edit or delete alice's message.
    expect(bubble(page_b, "hi bob (fixed)").get_by_role("button", name="Edit")).to_have_count(0)
    page_a.once("dialog", lambda dialog: dialog.accept())
    bubble(page_a, "this one goes away").get_by_role("button", name="Delete").click()
    expect(bubble(page_b, "this one goes away")).to_have_count(0, timeout=WAIT_MS)
    expect(bubble(page_a, "this one goes away")).to_have_count(0, timeout=WAIT_MS)

    ARTIFACTS.mkdir(exist_ok=True)
    page_a.screenshot(path=str(ARTIFACTS / "room.png"), full_page=True)

    # A reload shows the same history, read from Postgres once the worker has written it.
    wait_until(lambda: Message.objects.filter(room=room, body="hi bob (fixed)").exists()
               and Message.objects.filter(room=room, body="this one goes away", deleted=True).exists(),
               timeout=20, message="the worker to store the edit and the delete")
    page_b.reload()
    wait_connected(page_b)
    bodies = log(page_b).locator(".body").all_inner_texts()
    assert bodies == ["hello alice <b>not bold</b>", "hi bob (fixed)"]

    # Closing bob's page takes him off alice's online list.
    page_b.context.close()
    expect(online(page_a)).not_to_contain_text(bob.username, timeout=WAIT_MS)
    page_a.context.close()


def test_killed_instance_page_reconnects_elsewhere_and_misses_nothing(browser, web_b, worker, alice, bob, room):
    doomed = WebServer(f"web-doomed-{RUN}", child_env()).start()
    balancer = FailoverProxy([doomed.port, web_b.port]).start()
    try:
        page_a = open_room(browser, balancer.url, alice, room)  # lands on the doomed instance
        page_b = open_room(browser, web_b.url, bob, room)
        send(page_b, "before the crash")
        expect(bubble(page_a, "before the crash")).to_have_count(1, timeout=WAIT_MS)

        doomed.kill()
        page_a.wait_for_function("!window.chat.connected", timeout=WAIT_MS)
        during = [f"while you were away {n}" for n in range(5)]
        for body in during:
            send(page_b, body)
        wait_connected(page_a)
        expect(page_a.get_by_role("status").first).to_have_text("Connected")
        send(page_b, "after the reconnect")

        expect(bubble(page_a, "after the reconnect")).to_have_count(1, timeout=WAIT_MS)
        bodies = log(page_a).locator(".body").all_inner_texts()
        assert bodies == ["before the crash", *during, "after the reconnect"]
        seqs = [int(s) for s in log(page_a).locator("li.message").evaluate_all("els => els.map(e => e.dataset.seq)")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        page_a.context.close()
        page_b.context.close()
    finally:
        balancer.stop()
        doomed.stop()


def test_sign_up_create_a_private_room_add_a_member_and_post(browser, web_a, worker, bob):
    from tests.support import unique

    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone-sized screen
    page = context.new_page()
    page.goto(f"{web_a.url}/accounts/signup/")
    username = unique("erin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill("correct horse battery staple")
    page.get_by_label("Password confirmation").fill("correct horse battery staple")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Rooms")).to_be_visible(timeout=WAIT_MS)

    room_name = unique("Planning")
    page.get_by_label("Name").fill(room_name)
    page.get_by_label("Private").check()
    page.get_by_role("button", name="Create room").click()
    expect(page.get_by_role("heading", name=room_name)).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".room-header .badge")).to_have_text("private")
    wait_connected(page)
    expect(online(page)).to_contain_text(username, timeout=WAIT_MS)

    send(page, "first!\nwith a second line")
    expect(bubble(page, "first!\nwith a second line")).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    members = page.get_by_role("form", name="Add a member")
    members.get_by_label("Username").fill(bob.username)
    members.get_by_role("button", name="Add").click()
    expect(members.get_by_role("status")).to_have_text(f"{bob.username} is now a member.", timeout=WAIT_MS)
    members.get_by_label("Username").fill("nobody-here")
    members.get_by_role("button", name="Add").click()
    expect(members.get_by_role("status")).to_contain_text("nobody-here", timeout=WAIT_MS)
    page.screenshot(path=str(ARTIFACTS / "room-phone.png"), full_page=True)
    context.close()


def test_unread_badge_divider_and_search_that_jumps_to_the_message(browser, web_a, worker, alice, bob, room):
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from tests.support import chat_socket

    word = "walrus" + uuid.uuid4().hex[:6]

    async def bob_says():
        async with chat_socket(web_a, room.slug, bob.cookie) as b:
            for body in ("first news", f"the {word} has landed", "last news"):
                await b.send({"type": "message.send", "body": body, "client_id": uuid.uuid4().hex})
                await b.recv_type("ack")

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API owns this thread's event loop
        thread.submit(asyncio.run, bob_says()).result()
    wait_until(lambda: Message.objects.filter(room=room).count() == 3, 20, message="bob's messages stored")

    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.add_cookies([{"name": "sessionid", "value": alice.cookie, "domain": "127.0.0.1", "path": "/"}])
    page = context.new_page()
    page.goto(f"{web_a.url}/")
    entry = page.get_by_role("list", name="Rooms").locator(f'li[data-slug="{room.slug}"]')
    expect(entry.get_by_label("3 unread")).to_have_text("3")

    entry.get_by_role("link", name=room.name).click()
    wait_connected(page)
    expect(page.get_by_role("separator", name="New messages")).to_have_text("New messages")
    page.wait_for_function("window.chat.readSeq === window.chat.lastSeq", timeout=WAIT_MS)  # read once seen
    page.goto(f"{web_a.url}/")
    expect(entry.locator(".unread")).to_have_count(0)

    page.get_by_role("searchbox", name="Words to find").fill(word)
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("list", name="Search results")
    expect(results.get_by_role("listitem")).to_have_count(1, timeout=WAIT_MS)
    results.get_by_role("link").click()
    wait_connected(page)
    target = bubble(page, f"the {word} has landed")
    expect(target).to_have_class(re.compile(r"\bhighlight\b"))
    expect(target).to_be_in_viewport()
    page.screenshot(path=str(ARTIFACTS / "search-jump.png"))
    context.close()


def test_page_cut_off_the_network_resumes_with_no_gap_and_no_duplicate(browser, web_a, web_b, worker, alice, bob,
                                                                        room):
    line = FailoverProxy([web_a.port]).start()
    try:
        page_a = open_room(browser, line.url, alice, room)
        errors = []
        page_a.on("pageerror", lambda error: errors.append(str(error)))
        page_b = open_room(browser, web_b.url, bob, room)
        send(page_b, "before the cut")
        expect(bubble(page_a, "before the cut")).to_have_count(1, timeout=WAIT_MS)

        # The browser goes offline and its open socket dies with the network (offline emulation
        # alone leaves an open WebSocket alone).
        page_a.context.set_offline(True)
        line.cut()
        page_a.wait_for_function("!window.chat.connected", timeout=WAIT_MS)
        expect(page_a.get_by_role("status").first).to_have_text("Offline — waiting for the network.", timeout=WAIT_MS)

        during = [f"sent while alice was offline {n}" for n in range(6)]
        for body in during:
            send(page_b, body)
        for body in during:
            expect(bubble(page_b, body)).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
        # Alice writes while offline: her message waits, and goes once she is back.
        send(page_a, "alice wrote this offline")
        expect(bubble(page_a, "alice wrote this offline")).to_have_attribute("data-status", "pending")
        assert not any(body.startswith("sent while") for body in log(page_a).locator(".body").all_inner_texts())

        line.restore()
        page_a.context.set_offline(False)
        wait_connected(page_a)
        expect(bubble(page_a, "alice wrote this offline")).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
        send(page_b, "after the return")
        expect(bubble(page_a, "after the return")).to_have_count(1, timeout=WAIT_MS)

        def shown(page: Page) -> list[tuple[int, str]]:
            return [(int(seq), body) for seq, body in log(page).locator("li.message").evaluate_all(
                "els => els.map(e => [e.dataset.seq, e.querySelector('.body').textContent])")]

        seen_by_a = shown(page_a)
        assert [body for _, body in seen_by_a] == [
            "before the cut", *during, "alice wrote this offline", "after the return"]
        seqs = [seq for seq, _ in seen_by_a]
        assert seqs == sorted(set(seqs)), f"not once each in seq order: {seqs}"
        # Bob stayed connected throughout: alice's page holds exactly what his does.
        page_b.wait_for_function(f"window.chat.lastSeq >= {seqs[-1]}", timeout=WAIT_MS)
        assert seen_by_a == shown(page_b)
        assert errors == []
        page_a.context.close()
        page_b.context.close()
    finally:
        line.stop()
