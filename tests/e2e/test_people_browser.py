"""People and room settings in a real browser (issue 22), two users on two instances: the "Message"
action of the Online list opens the DM, the list labelled "Members" shows the room's members, the
owner renames and archives the room, blocks and unblocks a member, and a member leaves it."""

import re

import pytest
from playwright.sync_api import expect

from chat.models import Block, Membership, Room
from tests.conftest import make_room
from tests.e2e.test_room_browser import WAIT_MS, online, open_room

pytestmark = pytest.mark.browser


def members(page):
    return page.get_by_role("list", name="Members")


def test_message_from_the_online_list_opens_the_dm_and_members_are_listed(browser, web_a, web_b, alice, bob):
    room = make_room(alice, private=True)
    Membership.objects.create(room=room, user=bob)
    page_a = open_room(browser, web_a.url, alice, room)
    page_b = open_room(browser, web_b.url, bob, room)

    for page in (page_a, page_b):
        expect(members(page)).to_contain_text(alice.username, timeout=WAIT_MS)
        expect(members(page)).to_contain_text(bob.username)
        expect(members(page).locator("li", has_text=alice.username)).to_contain_text("owner")
    expect(members(page_a).locator("li", has_text=bob.username)).to_contain_text("online", timeout=WAIT_MS)

    expect(online(page_b)).to_contain_text(alice.username, timeout=WAIT_MS)
    online(page_b).get_by_role("button", name=f"Message {alice.username} directly").click()
    page_b.wait_for_url(re.compile(r"/rooms/dm-\d+-\d+/$"), timeout=WAIT_MS)
    page_b.wait_for_function("window.chat && window.chat.connected", timeout=WAIT_MS)
    dm = Room.objects.get(slug=page_b.url.rstrip("/").rsplit("/", 1)[1])
    assert dm.direct_key and set(dm.members.values_list("username", flat=True)) == {alice.username, bob.username}
    expect(members(page_b)).to_contain_text(alice.username, timeout=WAIT_MS)
    for page in (page_a, page_b):
        page.context.close()


def test_the_owner_renames_archives_and_blocks_and_a_member_leaves(browser, web_a, web_b, alice, bob):
    room = make_room(alice, private=True)
    Membership.objects.create(room=room, user=bob)
    page_a = open_room(browser, web_a.url, alice, room)
    page_b = open_room(browser, web_b.url, bob, room)
    expect(page_b.get_by_role("button", name="Leave room")).to_be_visible()
    expect(page_a.get_by_role("button", name="Leave room")).to_have_count(0)  # the owner cannot leave

    settings = page_a.get_by_role("form", name="Room settings")
    settings.get_by_label("Name").fill("Renamed room")
    settings.get_by_role("button", name="Rename").click()
    expect(page_a.locator("#room-name")).to_contain_text("Renamed room", timeout=WAIT_MS)
    settings.get_by_role("button", name="Archive").click()
    expect(page_a.locator("#archived-note")).to_be_visible(timeout=WAIT_MS)
    expect(page_a.get_by_role("textbox", name="Message")).to_be_disabled()
    room.refresh_from_db()
    assert room.name == "Renamed room" and room.archived
    # The member's page on the other instance shows both at once (room.updated), no reload.
    expect(page_b.locator("#room-name")).to_contain_text("Renamed room", timeout=WAIT_MS)
    expect(page_b.locator("#archived-note")).to_be_visible(timeout=WAIT_MS)
    expect(page_b.get_by_role("textbox", name="Message")).to_be_disabled()

    block = members(page_a).get_by_role("button", name=f"Block {bob.username}", exact=True)
    unblock = members(page_a).get_by_role("button", name=f"Unblock {bob.username}", exact=True)
    block.click()
    expect(unblock).to_be_visible(timeout=WAIT_MS)
    assert Block.objects.filter(blocker=alice, blocked=bob).exists()
    unblock.click()
    expect(block).to_be_visible(timeout=WAIT_MS)
    assert not Block.objects.filter(blocker=alice, blocked=bob).exists()

    page_b.get_by_role("button", name="Leave room").click()
    page_b.wait_for_url(f"{web_b.url}/", timeout=WAIT_MS)
    expect(page_b.get_by_role("list", name="Rooms")).not_to_contain_text("Renamed room")
    assert not Membership.objects.filter(room=room, user=bob).exists()
    for page in (page_a, page_b):
        page.context.close()
