"""Rendered bodies in a real browser, two users on two instances: the Markdown subset and links
(contract §9), XSS payloads that stay inert and inside their message box, @mentions highlighted,
and the composer's mention autocomplete."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_room_browser import WAIT_MS, bubble, log, open_room, send
from tests.support import ARTIFACTS

pytestmark = pytest.mark.browser

FORMATTED = """**bold words** and _italic ones_ and `inline <code>`
a link https://example.com/path?q=1 and [a named one](https://example.org/docs "docs")
<b>raw html stays text</b>

> quoted line

- first item
- second item

1. one
2. two

```
fenced block <i>
```

    indented code"""

# Each tries to run `window.__xss = 1` (or to open a dialog) or to escape its box.
XSS_PAYLOADS = [
    "<script>window.__xss=1</script>",
    "<img src=x onerror=\"window.__xss=1\">",
    "<img src=x onerror=alert(1)>",
    "<svg onload=\"window.__xss=1\">",
    "<svg><script>window.__xss=1</script></svg>",
    "<iframe src=\"javascript:window.parent.__xss=1\"></iframe>",
    "<iframe srcdoc=\"<script>parent.__xss=1</script>\"></iframe>",
    "<object data=\"javascript:window.__xss=1\"></object>",
    "<embed src=\"data:text/html,<script>parent.__xss=1</script>\">",
    "<a href=\"javascript:window.__xss=1\">html link</a>",
    "<a href=\"&#x6A;avascript:window.__xss=1\">entity link</a>",
    "[md link](javascript:window.__xss=1)",
    "[md link upper](JaVaScRiPt:window.__xss=1)",
    "[md link entity](&#106;avascript:window.__xss=1)",
    "[md link tab](java&#x09;script:window.__xss=1)",
    "[md link vbscript](vbscript:msgbox(1))",
    "[md data](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)",
    "[md data plain](data:text/html,<script>window.__xss=1</script>)",
    "<javascript:window.__xss=1>",
    "javascript:window.__xss=1",
    "![image](x\" onerror=\"window.__xss=1)",
    "[title quotes](https://example.com \"a\\\" onmouseover=\\\"window.__xss=1\")",
    "[title single](https://example.com 'a\\' onfocus=\\'window.__xss=1\\' autofocus')",
    "[<img src=x onerror=window.__xss=1>](https://example.com)",
    "<https://example.com/\"onmouseover=\"window.__xss=1>",
    "https://example.com/<img/src/onerror=window.__xss=1>",
    "\"><img src=x onerror=window.__xss=1>",
    "'><svg/onload=window.__xss=1>",
    "<div style=\"background:url(javascript:window.__xss=1)\">styled</div>",
    "<p style=\"width:expression(window.__xss=1)\">expression</p>",
    "<style>@import 'javascript:window.__xss=1';</style>",
    "<details open ontoggle=window.__xss=1>",
    "<form action=\"javascript:window.__xss=1\"><button>go</button></form>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>",
    "<!-- --><img src=x onerror=window.__xss=1><!-- -->",
    "<!--<img src=\"--><img src=x onerror=window.__xss=1//\">",
    "`<img src=x onerror=window.__xss=1>`",
    "`` `nested` <img src=x onerror=window.__xss=1> ``",
    "```\n</code></pre><img src=x onerror=window.__xss=1>\n```",
    "*<img src=x onerror=window.__xss=1>*",
    "&lt;script&gt;window.__xss=1&lt;/script&gt;",
    "\\u003cscript\\u003ewindow.__xss=1\\u003c/script\\u003e",
    "\uff1cscript\uff1ewindow.__xss=1\uff1c/script\uff1e",
    "<scr<script>ipt>window.__xss=1</scr</script>ipt>",
    # Not scripts: bodies that try to get out of their box.
    "W" * 3000,
    "https://example.com/" + "a" * 2000,
    "```\n" + "x = 1  # " + "long line " * 300 + "\n```",
    "`" + "y" * 1500 + "`",
    ">" * 60 + " deep quote",
    "\u202eRTL override text\u202c and on",
]

ALLOWED_TAGS = {"P", "BR", "STRONG", "EM", "CODE", "PRE", "BLOCKQUOTE", "UL", "OL", "LI", "A", "SPAN"}


# What a page's message list holds and where it stands, for the checks below.
INSPECT_LIST = """() => {
    const list = document.getElementById("messages");
    const box = list.getBoundingClientRect();
    const out = {tags: [], handlers: [], styles: [], hrefs: [], links: [], escaped: [], listScroll: 0};
    for (const node of list.querySelectorAll("*")) {
        for (const attr of node.attributes) {
            if (attr.name.toLowerCase().startsWith("on")) out.handlers.push(node.tagName + " " + attr.name);
        }
    }
    for (const node of list.querySelectorAll(".body *")) {
        out.tags.push(node.tagName);
        if (node.hasAttribute("style")) out.styles.push(node.tagName);
    }
    for (const a of list.querySelectorAll(".body a")) {
        if (a.hasAttribute("href")) out.hrefs.push(new URL(a.href).protocol);
        out.links.push([a.getAttribute("rel"), a.getAttribute("target")]);
    }
    for (const li of list.querySelectorAll("li.message")) {
        const outer = li.getBoundingClientRect();
        if (outer.left < box.left - 1 || outer.right > box.right + 1) {
            out.escaped.push("message " + li.dataset.seq);
        }
        // What is inside a code block scrolls within it: the block itself must fit.
        for (const node of li.querySelectorAll(".body, .body :not(pre *)")) {
            const r = node.getBoundingClientRect();
            if (r.width && (r.left < outer.left - 1 || r.right > outer.right + 1)) {
                out.escaped.push(li.dataset.seq + " " + node.tagName + " " + r.right + ">" + outer.right);
            }
        }
    }
    out.listScroll = list.scrollWidth - list.clientWidth;
    out.pageScroll = document.documentElement.scrollWidth - document.documentElement.clientWidth;
    out.listRight = box.right - document.documentElement.clientWidth;
    return out;
}"""


def starting(page: Page, prefix: str):
    """The message whose body starts with `prefix`."""
    body = page.locator(".body", has_text=re.compile("^" + re.escape(prefix)))
    return log(page).locator("li.message").filter(has=body)


def collect_dialogs(page: Page) -> list[str]:
    dialogs: list[str] = []

    def seen(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    return dialogs


def test_markdown_subset_and_links_render_and_the_stored_text_stays_the_authors(browser, web_a, web_b, worker,
                                                                                 alice, bob, room):
    page_a = open_room(browser, web_a.url, alice, room)
    page_b = open_room(browser, web_b.url, bob, room)
    send(page_a, FORMATTED)
    message = starting(page_b, "bold words")
    expect(message).to_have_count(1, timeout=WAIT_MS)
    body = message.locator(".body")

    expect(body.locator("strong")).to_have_text("bold words")
    expect(body.locator("em")).to_have_text("italic ones")
    expect(body.locator("p code")).to_have_text("inline <code>")
    expect(body.locator("blockquote")).to_have_text("quoted line")
    expect(body.locator("ul > li")).to_have_text(["first item", "second item"])
    expect(body.locator("ol > li")).to_have_text(["one", "two"])
    expect(body.locator("pre code")).to_have_text(["fenced block <i>", "indented code"])
    expect(body.locator("b")).to_have_count(0)
    expect(body).to_contain_text("<b>raw html stays text</b>")
    links = body.get_by_role("link")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_attribute("href", "https://example.com/path?q=1")
    expect(links.nth(1)).to_have_text("a named one")
    expect(links.nth(1)).to_have_attribute("href", "https://example.org/docs")
    for link in links.all():
        expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
        expect(link).to_have_attribute("target", "_blank")
        expect(link).not_to_have_attribute("title", re.compile(".*"))

    ARTIFACTS.mkdir(exist_ok=True)
    page_b.screenshot(path=str(ARTIFACTS / "formatting.png"))

    # The author edits the text as written, not the HTML shown.
    mine = starting(page_a, "bold words")
    expect(mine).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    mine.get_by_role("button", name="Edit").click()
    expect(page_a.get_by_role("textbox", name="Edit message")).to_have_value(FORMATTED)
    page_a.context.close()
    page_b.context.close()


def test_xss_payloads_stay_inert_and_inside_their_message_box(browser, web_a, web_b, worker, alice, bob, room):
    page_a = open_room(browser, web_a.url, alice, room)
    page_b = open_room(browser, web_b.url, bob, room)
    dialogs_a, dialogs_b = collect_dialogs(page_a), collect_dialogs(page_b)
    assert len(XSS_PAYLOADS) >= 30

    for payload in XSS_PAYLOADS:
        send(page_a, payload)
    for page in (page_a, page_b):
        expect(log(page).locator("li.message[data-seq]")).to_have_count(len(XSS_PAYLOADS), timeout=WAIT_MS)
    # Hover every link: a handler that slipped through would run now.
    for page in (page_a, page_b):
        for link in log(page).locator(".body a").all():
            link.hover(force=True)

    for page, dialogs_seen in ((page_a, dialogs_a), (page_b, dialogs_b)):
        assert dialogs_seen == []
        assert page.evaluate("window.__xss") is None
        report = page.evaluate(INSPECT_LIST)
        assert not set(report["tags"]) - ALLOWED_TAGS, report["tags"]
        assert report["handlers"] == [], report["handlers"]
        assert report["styles"] == []
        assert set(report["hrefs"]) <= {"http:", "https:", "mailto:"}, report["hrefs"]
        assert all(rel == "noopener noreferrer nofollow" and target == "_blank" for rel, target in report["links"])
        assert report["escaped"] == [], report["escaped"]
        assert report["listScroll"] <= 1, "the message list scrolls sideways"
        assert report["pageScroll"] <= 1 and report["listRight"] <= 0, "a body widened the page"
        for tag in ("script", "iframe", "img", "svg", "object", "embed", "style", "form", "math", "details"):
            assert log(page).locator(tag).count() == 0, tag
    page_b.screenshot(path=str(ARTIFACTS / "xss.png"))
    # On a phone-sized screen too, nothing leaves its box or widens the page.
    page_b.set_viewport_size({"width": 390, "height": 844})
    report = page_b.evaluate(INSPECT_LIST)
    assert report["escaped"] == [] and report["listScroll"] <= 1, report["escaped"]
    assert report["pageScroll"] <= 1 and report["listRight"] <= 0, "a body widened the phone's page"
    page_b.screenshot(path=str(ARTIFACTS / "xss-phone.png"))
    # HTML in a body is shown as text (so is the entity-encoded one, decoded as Markdown does).
    expect(bubble(page_b, "<script>window.__xss=1</script>")).to_have_count(2)
    expect(bubble(page_b, "<img src=x onerror=alert(1)>")).to_have_count(1)
    page_a.context.close()
    page_b.context.close()


def test_mentions_are_highlighted_and_the_composer_completes_member_names(browser, web_a, web_b, worker, alice,
                                                                          bob, room):
    page_b = open_room(browser, web_b.url, bob, room)
    page_a = open_room(browser, web_a.url, alice, room)
    expect(page_a.get_by_role("list", name="Online")).to_contain_text(bob.username, timeout=WAIT_MS)
    box = page_a.get_by_role("textbox", name="Message")
    picker = page_a.get_by_role("listbox", name="People to mention")

    # Typing "@" and the start of a name lists the matching members; Escape closes the list.
    box.press_sequentially("hey @" + bob.username[:3])
    expect(picker).to_be_visible()
    option = picker.get_by_role("option", name=bob.username)
    expect(option).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-activedescendant", option.get_attribute("id"))
    box.press("Escape")
    expect(picker).to_be_hidden()

    # Enter picks the highlighted name (and does not send); Enter then sends.
    box.fill("")
    box.press_sequentially("thanks @" + bob.username[:4])
    expect(option).to_be_visible()
    box.press("Enter")
    expect(picker).to_be_hidden()
    expect(box).to_have_value(f"thanks @{bob.username} ")
    box.press_sequentially("and a mail to nobody@example.com, `@code` too")
    box.press("Enter")

    # A click picks too.
    box.press_sequentially("cc @" + bob.username[:3])
    picker.get_by_role("option", name=bob.username).click()
    expect(box).to_have_value(f"cc @{bob.username} ")
    box.press_sequentially(f"and @{alice.username}.")
    box.press("Enter")

    first = starting(page_b, "thanks")
    expect(first).to_have_count(1, timeout=WAIT_MS)
    page_b.screenshot(path=str(ARTIFACTS / "mentions.png"))
    expect(first.locator(".mention")).to_have_count(1)
    expect(first.locator(".mention.me")).to_have_text(f"@{bob.username}")
    expect(first).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(first.locator("code")).to_have_text("@code")
    second = starting(page_b, "cc @")
    expect(second.locator(".mention")).to_have_text([f"@{bob.username}", f"@{alice.username}"], timeout=WAIT_MS)
    # The author sees the same names highlighted, their own the strong way.
    mine = starting(page_a, "cc @")
    expect(mine.locator(".mention.me")).to_have_text(f"@{alice.username}", timeout=WAIT_MS)
    expect(mine.locator(".mention:not(.me)")).to_have_text(f"@{bob.username}")
    page_a.context.close()
    page_b.context.close()


def test_the_autocomplete_offers_members_who_are_neither_online_nor_in_the_history(browser, web_a, worker, alice):
    from concurrent.futures import ThreadPoolExecutor

    from chat.services.rooms import room_add_member
    from tests.conftest import make_room, make_user

    private = make_room(alice, private=True)
    carols = sorted([make_user("carol"), make_user("carol")], key=lambda user: user.username)
    with ThreadPoolExecutor(1) as thread:  # it notifies sockets; Playwright's sync API owns this thread's loop
        for carol in carols:
            thread.submit(room_add_member, actor=alice, room=private, username=carol.username).result()
    page = open_room(browser, web_a.url, alice, private)
    box = page.get_by_role("textbox", name="Message")
    box.press_sequentially("@caro")
    picker = page.get_by_role("listbox", name="People to mention")
    options = picker.get_by_role("option")
    expect(options).to_have_text([carol.username for carol in carols], timeout=WAIT_MS)
    expect(box).to_have_attribute("aria-activedescendant", options.nth(0).get_attribute("id"))
    box.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-activedescendant", options.nth(1).get_attribute("id"))
    box.press("ArrowDown")  # wraps around
    box.press("ArrowDown")
    box.press("Tab")
    expect(box).to_have_value(f"@{carols[1].username} ")
    expect(box).to_be_focused()
    page.context.close()
