// Replies: the quote above a reply (a button that brings its parent into view, loading older pages
// until it is there), "N replies" under a parent, and the composer's "Replying to …" bar. The
// store keeps the reply target and the counts; quotes and excerpts go in as text only.
import { authorName, el } from "../dom.js";

const MAX_PAGES = 20; // older pages loaded at most to find a quoted message
const FLASH_MS = 2500;

const GONE = {
  deleted: "Original message deleted",
  hidden: "Original message hidden by a moderator",
};

/** The first line of a body, shortened, as the server's excerpts are. */
export function excerptOf(body) {
  const line = body.trim().split("\n", 1)[0];
  return line.length > 120 ? `${line.slice(0, 119)}…` : line;
}

export function mountReplies({ list, store, loadOlder, showError }) {
  const bySeq = (seq) => list.querySelector(`li.message[data-seq="${seq}"]`);

  function quote(message) {
    const parent = message.reply_to;
    if (!parent) return null;
    const gone = GONE[parent.state];
    const text = gone ?? parent.excerpt;
    const button = el("button", { type: "button", class: `reply-quote${gone ? " gone" : ""}`,
      "aria-label": `Reply to ${authorName(parent.author)}: ${text}` });
    button.dataset.parent = parent.id;
    button.append(el("span", { class: "reply-author" }, authorName(parent.author)), el("span", { class: "reply-excerpt" }, text));
    button.addEventListener("click", () => jumpTo(parent));
    return button;
  }

  /** The quote of our own reply while it is on its way (its parent as this page shows it). */
  function pendingQuote(parentId) {
    const parent = parentId && store.messageById(parentId);
    if (!parent) return null;
    return quote({ reply_to: { id: parent.id, seq: parent.seq, author: parent.author, excerpt: excerptOf(parent.body),
      state: "visible" } });
  }

  function countLine(message) {
    const count = store.replyCount(message.id);
    return el("div", { class: "reply-count", hidden: count === 0 }, count === 1 ? "1 reply" : `${count} replies`);
  }

  function flash(li) {
    li.scrollIntoView({ block: "center", behavior: "smooth" });
    li.classList.add("flash");
    setTimeout(() => li.classList.remove("flash"), FLASH_MS);
  }

  async function jumpTo({ id, seq, state }) {
    if (GONE[state]) return showError(`${GONE[state]}.`);
    for (let page = 0; !bySeq(seq) && page < MAX_PAGES && store.hasOlder && store.oldestSeq() > seq; page++) {
      await loadOlder();
    }
    const li = bySeq(seq);
    if (li && li.dataset.id === id) return flash(li);
    // Loaded past it (or nothing older left) and not there: gone since; else it is further back.
    showError(store.oldestSeq() < seq || !store.hasOlder
      ? "The original message could not be found; it may have been deleted."
      : "The original message is too far back; scroll up to find it.");
  }

  store.on("replies", (id) => {
    const li = list.querySelector(`li.message[data-id="${CSS.escape(id)}"]`);
    const message = store.messageById(id);
    if (li && message) li.querySelector(".reply-count")?.replaceWith(countLine(message));
  });
  store.on("message.deleted", ({ id }) => {
    for (const old of list.querySelectorAll(`.reply-quote[data-parent="${CSS.escape(id)}"]`)) {
      const message = store.messages.get(Number(old.closest("li")?.dataset.seq));
      const fresh = message && quote(message);
      if (fresh) old.replaceWith(fresh);
    }
  });

  return { quote, pendingQuote, countLine };
}

/** The composer's "Replying to <author>: <excerpt>" with its cancel button; Escape cancels too.
 * Returns the composer's draft part: what a send carries, cleared once sent. */
export function mountReplyBar({ bar, input, store }) {
  const text = el("span", { class: "reply-bar-text" });
  const cancel = el("button", { type: "button", class: "link-button", "aria-label": "Cancel reply", title: "Cancel reply" }, "×");
  cancel.addEventListener("click", () => {
    store.setReplyTarget(null);
    input.focus();
  });
  bar.append(text, cancel);

  store.on("reply.target", (target) => {
    bar.hidden = !target;
    if (!target) return text.replaceChildren();
    text.replaceChildren("Replying to ", el("strong", {}, authorName(target.author)), `: ${excerptOf(target.body)}`);
    input.focus();
  });

  return {
    collect: () => ({ fields: store.replyTarget ? { reply_to: store.replyTarget.id } : {} }),
    sent: () => store.setReplyTarget(null),
    escape: () => {
      if (!store.replyTarget) return false;
      store.setReplyTarget(null);
      return true;
    },
  };
}
