// The message list (role=log): history, live messages in seq order, the bubbles of our own sends
// with their state, older pages on scroll-up (the reader's place kept), the "New messages" divider
// with its jump button, and ?at=<seq> jumps (the page around the message and the newest one, the
// messages between loaded as they scroll into view). The day separators and author grouping are
// views/reading.js's. History comes over HTTP a page at a time; the socket only resumes after the
// newest message shown. A message's rich parts (a reply's quote above the body; files, reactions
// and reply count below) come from their own views, passed in as `parts`.
import { roomMessages } from "../api.js";
import { actionButton, authorName, el } from "../dom.js";
import { mentionedNames, renderBody } from "../format.js";
import { createLayout, formatTime } from "./reading.js";

const PAGE = 50;
const UNREAD_PAGES = 4; // older pages loaded at most to reach the first unread message on opening

export function mountMessages({ list, olderButton, store, config, actions, onRetry, showError, parts = {} }) {
  let olderLoad = null; // the older page on its way, if any
  let gap = null; // after a jump: {li, from, to}, messages with from < seq < to not loaded yet
  let loadingNewer = false;

  function atBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  const layout = createLayout(list);

  function bodyOf(text) {
    const body = el("div", { class: "body" });
    body.append(renderBody(text, config.username));
    return body;
  }

  function render(message) {
    const own = message.author.id === config.userId;
    const li = el("li", { class: own ? "message own" : "message" });
    li.dataset.seq = String(message.seq);
    li.dataset.id = message.id;
    li.dataset.author = String(message.author.id);
    li.dataset.at = message.created_at;
    if (!own && mentionedNames(message.body).includes(config.username)) li.classList.add("mentions-me");
    const head = el("div", { class: "message-head" });
    head.append(el("span", { class: "author" }, authorName(message.author)));
    head.append(el("time", { datetime: message.created_at, title: new Date(message.created_at).toLocaleString() },
      formatTime(message.created_at)));
    if (message.edited_at) {
      head.append(el("span", { class: "edited", title: `Edited ${new Date(message.edited_at).toLocaleString()}` },
        "(edited)"));
    }
    head.append(actions.forMessage(message, own));
    li.append(head);
    const quote = parts.quote?.(message);
    if (quote) li.append(quote);
    li.append(bodyOf(message.body));
    for (const part of parts.below ?? []) li.append(part(message));
    return li;
  }

  const bySeq = (seq) => list.querySelector(`li[data-seq="${seq}"]`);
  const byClientId = (clientId) => list.querySelector(`li[data-client-id="${CSS.escape(clientId)}"]`);

  function insertBySeq(li, seq) {
    // Messages arrive mostly in order: walk back from the end to find the slot. Our unsent
    // bubbles have no seq yet and stay below everything.
    let after = list.lastElementChild;
    while (after && Number(after.dataset.seq ?? Infinity) > seq) after = after.previousElementSibling;
    if (after) after.after(li);
    else list.prepend(li);
  }

  function showSendState(li, entry) {
    const { status } = entry;
    li.dataset.status = status;
    li.classList.toggle("pending", status === "pending");
    li.classList.toggle("failed", status === "failed");
    li.querySelector(".send-state")?.remove();
    if (status === "sent") return;
    const note = el("span", { class: "send-state" }, status === "pending" ? "sending…" : "not sent ");
    if (status === "failed") note.append(actionButton("Retry", () => onRetry(entry.clientId)));
    const head = li.querySelector(".message-head");
    head.insertBefore(note, head.querySelector(".actions"));
  }

  store.on("message.added", ({ message, mine }) => {
    const stick = atBottom();
    const li = render(message);
    if (mine) {
      // Our own message arrived: it takes its bubble's place, in seq order, with its send state.
      byClientId(mine.clientId)?.remove();
      showSendState(li, mine);
    }
    insertBySeq(li, message.seq);
    layout.schedule();
    if (stick) list.scrollTop = list.scrollHeight;
  });

  store.on("message.edited", (message) => {
    const old = bySeq(message.seq);
    if (!old) return;
    const li = render(message);
    const mentionsMe = li.classList.contains("mentions-me");
    li.className = old.className; // keeps its grouping, send state and highlight
    li.classList.toggle("mentions-me", mentionsMe); // the new text decides that one
    old.replaceWith(li);
  });

  store.on("message.deleted", ({ seq }) => {
    bySeq(seq)?.remove();
    layout.schedule();
  });

  store.on("pending.added", (entry) => {
    const li = el("li", { class: "message own pending" });
    li.dataset.clientId = entry.clientId;
    const head = el("div", { class: "message-head" });
    head.append(el("span", { class: "author" }, config.username));
    li.append(head);
    const quote = parts.pendingQuote?.(entry.replyTo);
    if (quote) li.append(quote);
    const files = entry.attachments.length;
    li.append(bodyOf(entry.body || `(${files === 1 ? "1 file" : `${files} files`})`));
    list.append(li);
    list.scrollTop = list.scrollHeight;
    showSendState(li, entry);
  });

  store.on("pending.changed", (entry) => {
    const li = entry.seq === undefined ? byClientId(entry.clientId) : bySeq(entry.seq);
    if (li) showSendState(li, entry);
  });

  // The "New messages" divider, placed once when the room opens (before the first message of
  // others above the read mark), and a button that brings it into view while it is out of sight.
  const jumpButton = el("button", { type: "button", class: "jump-unread", hidden: true }, "Jump to first unread");
  list.before(jumpButton);
  let divider = null;

  function updateJump() {
    if (divider && (!divider.isConnected || inView(divider))) divider = null; // seen: no more need to jump
    jumpButton.hidden = !divider;
  }

  jumpButton.addEventListener("click", () => {
    divider?.scrollIntoView({ block: "start" });
    updateJump();
    list.focus({ preventScroll: true });
  });

  function showNewDivider() {
    const firstNew = [...list.querySelectorAll("li.message:not(.own)")].find((li) => Number(li.dataset.seq) > store.readSeq);
    if (!firstNew || list.querySelector(".new-divider")) return;
    divider = el("li", { class: "new-divider", role: "separator", "aria-label": "New messages" }, "New messages");
    divider.dataset.seq = String(store.readSeq + 0.5); // keeps insertBySeq's order
    firstNew.before(divider);
    layout.now();
  }

  function showPage(page) {
    store.addPage(page.messages);
    store.hasOlder = page.has_more;
    olderButton.hidden = !page.has_more;
    store.historyLoaded = true;
  }

  function placeGap(from, to) {
    gap?.li.remove();
    gap = null;
    if (to - from <= 1) return;
    const li = el("li", { class: "gap" });
    li.dataset.seq = String(from + 0.5); // keeps insertBySeq's order
    li.append(actionButton("Load newer messages", loadNewer));
    gap = { li, from, to };
    insertBySeq(li, from + 0.5);
  }

  /** The newest page, or for a jump the page around `jumpTo` and the newest page, with the gap
   * between them marked; the socket then resumes after the newest message, never from the jump. */
  async function loadHistory(jumpTo) {
    try {
      if (!jumpTo) {
        showPage(await roomMessages(config.room, { limit: String(PAGE) }));
        // Back to the first unread message, so the divider stands where the reader left off.
        const unreadAbove = () => store.readSeq > 0 && store.hasOlder && store.oldestSeq() > store.readSeq + 1;
        for (let more = UNREAD_PAGES; more > 0 && unreadAbove(); more--) {
          showPage(await roomMessages(config.room, { limit: String(PAGE), before: String(store.oldestSeq()) }));
        }
      } else {
        const around = await roomMessages(config.room, { limit: String(PAGE), before: String(jumpTo + Math.floor(PAGE / 2)) });
        const newest = await roomMessages(config.room, { limit: String(PAGE) });
        showPage(around);
        store.addPage(newest.messages);
        const last = around.messages.at(-1)?.seq ?? jumpTo;
        if (newest.has_more && newest.messages.length) placeGap(last, newest.messages[0].seq);
      }
    } catch (err) {
      // "Load older messages" tries again; the socket is live only until a message shows.
      store.hasOlder = true;
      olderButton.hidden = false;
      throw err;
    }
    showNewDivider();
    layout.now();
    const target = jumpTo && bySeq(jumpTo);
    if (target) {
      target.classList.add("highlight");
      target.scrollIntoView({ block: "center" });
    } else {
      list.scrollTop = list.scrollHeight;
    }
    updateJump();
  }

  /** Runs `change` (which adds messages above) and puts the first message in view back where it
   * was on screen, so the reader does not jump (whatever the browser's own scroll anchoring did). */
  async function keepingPlace(change) {
    const top = () => list.getBoundingClientRect().top;
    const anchor = [...list.querySelectorAll("li.message")].find((li) => li.getBoundingClientRect().bottom > top());
    const offset = anchor ? anchor.getBoundingClientRect().top - top() : 0;
    await change();
    layout.now();
    if (anchor?.isConnected) list.scrollTop += anchor.getBoundingClientRect().top - top() - offset;
  }

  /** The next older page; one at a time (a second call gets the one on its way). */
  function loadOlder() {
    if (olderLoad || !store.hasOlder) return olderLoad ?? Promise.resolve();
    const oldest = store.oldestSeq();
    const params = { limit: String(PAGE) };
    if (Number.isFinite(oldest)) params.before = String(oldest); // else the newest page: none loaded yet
    olderLoad = keepingPlace(async () => showPage(await roomMessages(config.room, params)))
      .catch(() => showError("Could not load older messages. Scroll up to try again."))
      .finally(() => {
        olderLoad = null;
      });
    return olderLoad;
  }

  /** The next page of a jump's gap, oldest first. */
  async function loadNewer() {
    if (loadingNewer || !gap) return;
    loadingNewer = true;
    try {
      const page = await roomMessages(config.room, { limit: String(PAGE), after: String(gap.from) });
      store.addPage(page.messages);
      layout.now();
      const reached = page.messages.at(-1)?.seq ?? gap.to;
      placeGap(page.has_more ? reached : gap.to, gap.to);
    } catch (err) {
      showError("Could not load newer messages. Scroll down to try again.");
    } finally {
      loadingNewer = false;
    }
  }

  function inView(li) {
    const box = li.getBoundingClientRect();
    const view = list.getBoundingClientRect();
    return box.bottom > view.top && box.top < view.bottom;
  }

  // An image loading below grows the list: a reader at the bottom stays at the bottom.
  let pinned = true;
  list.addEventListener("load", () => {
    if (pinned) list.scrollTop = list.scrollHeight;
  }, true);

  list.addEventListener("scroll", () => {
    pinned = atBottom();
    if (list.scrollTop < 60) loadOlder();
    if (gap && inView(gap.li)) loadNewer();
    updateJump();
  });
  olderButton.addEventListener("click", loadOlder);

  return { atBottom, loadHistory, loadOlder };
}
