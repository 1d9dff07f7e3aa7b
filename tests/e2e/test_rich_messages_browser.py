"""Richer messages in a real browser (contract §8), two users on two instances: reactions live,
replies with their quotes (also to a message older than the first page), and files pasted, dropped or
picked, shown as thumbnails or refused with the server's reason in the composer."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from chat.models import Message
from tests.e2e.test_reading_browser import open_as, store
from tests.e2e.test_room_browser import WAIT_MS, bubble, log, send
from tests.support import ARTIFACTS, wait_until

pytestmark = pytest.mark.browser


def chip(page: Page, body: str, emoji: str, count: int):
    """The reaction button of `emoji` under the message `body`, showing `count`."""
    plural = "reaction" if count == 1 else "reactions"
    return bubble(page, body).get_by_role("button", name=re.compile(f"^{re.escape(emoji)} {count} {plural}\\b"))


def test_reactions_reach_the_other_instance_live(browser, web_a, web_b, worker, alice, bob, room):
    page_a = open_as(browser, web_a.url, alice, room)
    page_b = open_as(browser, web_b.url, bob, room)
    send(page_a, "react to this")
    expect(bubble(page_b, "react to this")).to_have_count(1, timeout=WAIT_MS)

    # The picker: a menu that Escape closes (the focus back on its button), then a pick.
    add = bubble(page_a, "react to this").get_by_role("button", name="Add reaction")
    add.click()
    menu = page_a.get_by_role("menu", name="Reactions")
    expect(menu).to_be_visible()
    expect(menu.get_by_role("menuitem")).to_have_count(10)
    page_a.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(add).to_be_focused()
    add.click()
    menu.get_by_role("menuitem", name="👍").click()
    expect(menu).to_be_hidden()

    expect(chip(page_b, "react to this", "👍", 1)).to_have_attribute("aria-pressed", "false", timeout=WAIT_MS)
    expect(chip(page_a, "react to this", "👍", 1)).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    expect(chip(page_b, "react to this", "👍", 1)).to_have_accessible_name(re.compile(alice.username))

    # Bob adds his by clicking the chip: both see 2.
    chip(page_b, "react to this", "👍", 1).click()
    expect(chip(page_a, "react to this", "👍", 2)).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    expect(chip(page_b, "react to this", "👍", 2)).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)

    ARTIFACTS.mkdir(exist_ok=True)
    page_b.screenshot(path=str(ARTIFACTS / "reactions.png"))

    # Alice takes hers back: 1 on both, not hers any more.
    chip(page_a, "react to this", "👍", 2).click()
    expect(chip(page_b, "react to this", "👍", 1)).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    expect(chip(page_a, "react to this", "👍", 1)).to_have_attribute("aria-pressed", "false", timeout=WAIT_MS)
    page_a.context.close()
    page_b.context.close()


def quote(page: Page, body: str):
    return bubble(page, body).get_by_role("button", name=re.compile("^Reply to "))


def test_replies_quote_their_parent_and_jump_to_it_even_when_older_than_the_page(
        browser, web_a, web_b, worker, alice, bob, room):
    start = datetime.now(UTC) - timedelta(hours=3)
    store(room, [(seq, alice, f"history {seq}", start + timedelta(minutes=seq)) for seq in range(1, 121)])
    first = Message.objects.get(room=room, seq=1)
    # A reply to the oldest message, as the worker would have stored it: its parent is 120 messages up.
    Message.objects.create(room=room, seq=121, author=bob, body="about the very first", reply_to=first.id,
                           created_at=start + timedelta(minutes=130))
    page_a = open_as(browser, web_a.url, alice, room)
    page_b = open_as(browser, web_b.url, bob, room)

    # Bob replies to alice's newest message: the composer says to what, the send carries it.
    bubble(page_b, "history 120").get_by_role("button", name="Reply", exact=True).click()
    bar = page_b.locator("#reply-bar")
    expect(bar).to_have_text(re.compile(f"Replying to {re.escape(alice.username)}: history 120"))
    expect(page_b.get_by_role("textbox", name="Message")).to_be_focused()
    page_b.keyboard.press("Escape")  # Escape cancels; Reply again
    expect(bar).to_be_hidden()
    bubble(page_b, "history 120").get_by_role("button", name="Reply", exact=True).click()
    send(page_b, "agreed")
    expect(bar).to_be_hidden()

    expect(quote(page_a, "agreed")).to_have_accessible_name(f"Reply to {alice.username}: history 120", timeout=WAIT_MS)
    expect(bubble(page_a, "history 120").locator(".reply-count")).to_have_text("1 reply", timeout=WAIT_MS)
    expect(bubble(page_b, "history 120").locator(".reply-count")).to_have_text("1 reply", timeout=WAIT_MS)

    # After a reload the quote and the count come from the history.
    wait_until(lambda: Message.objects.filter(room=room, body="agreed", reply_to__isnull=False).exists(),
               timeout=20, message="the worker to store the reply")
    page_a.reload()
    page_a.wait_for_function("window.chat && window.chat.connected", timeout=WAIT_MS)
    expect(quote(page_a, "agreed")).to_have_accessible_name(f"Reply to {alice.username}: history 120")
    expect(bubble(page_a, "history 120").locator(".reply-count")).to_have_text("1 reply")

    # The quote jumps to its parent: on screen, highlighted.
    quote(page_a, "agreed").click()
    parent = bubble(page_a, "history 120")
    expect(parent).to_have_class(re.compile(r"\bflash\b"))
    expect(parent).to_be_in_viewport()

    # A parent older than the loaded pages: older pages load until it is there.
    expect(log(page_a).locator('li.message[data-seq="1"]')).to_have_count(0)
    old_quote = quote(page_a, "about the very first")
    expect(old_quote).to_have_accessible_name(f"Reply to {alice.username}: history 1")
    old_quote.click()
    oldest = bubble(page_a, "history 1")
    expect(oldest).to_have_class(re.compile(r"\bflash\b"), timeout=WAIT_MS)
    expect(oldest).to_be_in_viewport()
    expect(oldest.locator(".reply-count")).to_have_text("1 reply")
    ARTIFACTS.mkdir(exist_ok=True)
    page_a.screenshot(path=str(ARTIFACTS / "replies.png"))

    # The parent deleted live: its quote says so on the other instance.
    page_a.once("dialog", lambda dialog: dialog.accept())
    bubble(page_a, "history 120").get_by_role("button", name="Delete").click()
    expect(quote(page_b, "agreed")).to_have_accessible_name(f"Reply to {alice.username}: Original message deleted",
                                                            timeout=WAIT_MS)
    page_a.context.close()
    page_b.context.close()


PASTE_PNG = """async (box) => {
    const canvas = document.createElement("canvas");
    canvas.width = 80;
    canvas.height = 60;
    const context = canvas.getContext("2d");
    context.fillStyle = "#2456c7";
    context.fillRect(0, 0, 80, 60);
    context.fillStyle = "#e3b341";
    context.fillRect(20, 15, 40, 30);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const data = new DataTransfer();
    data.items.add(new File([blob], "screenshot.png", { type: "image/png" }));
    box.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
}"""


def test_a_pasted_image_and_a_picked_file_reach_the_other_instance(browser, web_a, web_b, worker, alice, bob, room):
    page_a = open_as(browser, web_a.url, alice, room)
    page_b = open_as(browser, web_b.url, bob, room)
    box = page_a.get_by_role("textbox", name="Message")
    files = page_a.get_by_role("group", name="Files to send")

    # A screenshot pasted into the composer uploads at once; it may go without a word.
    box.evaluate(PASTE_PNG)
    pasted = files.get_by_role("group", name="screenshot.png")
    expect(pasted).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(pasted.get_by_role("progressbar")).to_have_count(0)
    box.press("Enter")
    expect(files).to_be_hidden(timeout=WAIT_MS)  # the chips go once the send is acked

    image = log(page_b).get_by_role("img", name="screenshot.png")
    expect(image).to_have_count(1, timeout=WAIT_MS)
    page_b.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=WAIT_MS)

    # The thumbnail opens the full image in a dialog.
    image.click()
    viewer = page_b.get_by_role("dialog", name="screenshot.png")
    expect(viewer).to_be_visible()
    page_b.wait_for_function("img => img.complete && img.naturalWidth === 80",
                             arg=viewer.get_by_role("img").element_handle(), timeout=WAIT_MS)
    viewer.get_by_role("button", name="Close image").click()
    expect(viewer).to_be_hidden()

    # The button's path: a text file picked with a body; a download card on the other side.
    page_a.locator("#attach-input").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"plain notes for bob\n" * 20}])
    expect(files.get_by_role("group", name="notes.txt")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    send(page_a, "the notes")
    card = bubble(page_b, "the notes").get_by_role("link", name=re.compile(r"^notes\.txt"))
    expect(card).to_have_count(1, timeout=WAIT_MS)
    expect(card).to_contain_text("400 B")
    href = card.get_attribute("href")
    assert href and href.startswith("/files/"), href
    assert page_b.request.get(f"{web_b.url}{href}").text() == "plain notes for bob\n" * 20

    ARTIFACTS.mkdir(exist_ok=True)
    page_b.screenshot(path=str(ARTIFACTS / "attachments.png"))
    page_a.context.close()
    page_b.context.close()


def test_a_refused_upload_shows_why_in_the_composer(browser, web_a, worker, alice, room):
    page = open_as(browser, web_a.url, alice, room)
    # Named and typed as a PNG, really an executable: the server checks the content.
    with page.expect_response(lambda response: "/attachments/" in response.url) as answer:
        page.locator("#attach-input").set_input_files(
            files=[{"name": "cat.png", "mimeType": "image/png", "buffer": b"\x7fELF\x02\x01\x01" + b"\x00" * 200}])
    assert answer.value.status == 415, answer.value.text()
    detail = answer.value.json()["error"]["detail"]
    refused = page.get_by_role("group", name="Files to send").get_by_role("group", name="cat.png")
    expect(refused).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    expect(refused.get_by_role("alert")).to_have_text(detail)
    # Nothing to send: Enter leaves it; the remove button takes it away.
    page.get_by_role("textbox", name="Message").press("Enter")
    expect(log(page).locator("li.message")).to_have_count(0)
    refused.get_by_role("button", name="Remove cat.png").click()
    expect(page.get_by_role("group", name="Files to send")).to_be_hidden()

    # A file dropped on the messages uploads like a picked one.
    page.locator(".messages-pane").evaluate("""(pane) => {
        const data = new DataTransfer();
        data.items.add(new File(["dropped text\\n"], "dropped.txt", { type: "text/plain" }));
        for (const type of ["dragenter", "dragover", "drop"]) {
            pane.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
        }
    }""")
    dropped = page.get_by_role("group", name="Files to send").get_by_role("group", name="dropped.txt")
    expect(dropped).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    page.context.close()


def test_a_deleted_accounts_messages_and_a_pruned_parent_show_as_deleted_user(browser, web_a, alice, room):
    """History shows a deleted account's stand-in (chat.services.erasure) as "deleted user", and a
    reply whose parent is gone (pruned: no author) as a quote of a deleted message."""
    from chat.services.erasure import stand_in_username
    from tests.conftest import make_user

    stand_in = make_user("unused")
    stand_in.username = stand_in_username(stand_in.id)
    stand_in.save()
    now = datetime.now(UTC)
    store(room, [(1, stand_in, "left behind", now - timedelta(minutes=3))])
    Message.objects.create(room=room, seq=2, author=alice, body="answer to a pruned one", created_at=now,
                           reply_to="00000000-0000-7000-8000-000000000000")
    page = open_as(browser, web_a.url, alice, room)
    expect(bubble(page, "left behind").locator(".author")).to_have_text("deleted user", timeout=WAIT_MS)
    expect(bubble(page, "answer to a pruned one").get_by_role("button", name=re.compile("^Reply to deleted user")))\
        .to_have_count(1)
    page.context.close()
