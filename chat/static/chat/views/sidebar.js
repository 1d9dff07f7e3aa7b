// The sidebar: the navigation landmark "Conversations" listing the user's rooms and DMs, each a
// link named "<room>, N unread, N mentions" (contract §9), bold when unread; the page title with
// the unread total; a browser notification on a mention while the tab is hidden, once the user
// allowed it from the sidebar's own button (never asked on page load). On a phone the list folds
// behind the "Conversations" button. `startSidebar` wires it to a socket's sidebar frames.
import { roomsList, toLogin } from "../api.js";
import { el } from "../dom.js";
import { SidebarStore } from "../store.js";

const PHONE = window.matchMedia("(max-width: 700px)");
// A mention: chat.protocol.MENTION_RE, the server's (docs/protocol.md), in JavaScript's terms.
const MENTION = /(?<![\p{L}\p{N}_.@+-])@([\p{L}\p{N}_.@+-]*[\p{L}\p{N}_+-])/gu;

/** Whether `body` mentions `username`. */
export function mentionsUser(body, username) {
  for (const match of body.matchAll(MENTION)) if (match[1] === username) return true;
  return false;
}

/** The link's accessible name: the room's name, then the counts that are not zero. */
export function conversationName(entry) {
  let name = entry.label;
  if (entry.unread > 0) name += `, ${entry.unread} unread`;
  if (entry.mentions > 0) name += `, ${entry.mentions} ${entry.mentions === 1 ? "mention" : "mentions"}`;
  return name;
}

export function mountSidebar({ nav, store }) {
  const toggle = el("button", { type: "button", class: "conversations-toggle", "aria-expanded": "false",
    "aria-controls": "conversation-list" }, "Conversations");
  const body = el("div", { id: "conversation-list", class: "conversations-body" });
  const heading = el("h2", { class: "conversations-heading" }, "Conversations");
  const list = el("ul", { class: "conversation-list" });
  const empty = el("p", { class: "help" }, "Rooms you open and direct messages show here.");
  const notify = el("button", { type: "button", class: "link-button notify-button", hidden: true },
    "Notify me of mentions");
  body.append(heading, list, empty, notify);
  nav.replaceChildren(toggle, body);

  function fold(open) {
    toggle.setAttribute("aria-expanded", String(open));
    nav.classList.toggle("open", open);
  }
  toggle.addEventListener("click", () => fold(toggle.getAttribute("aria-expanded") !== "true"));
  PHONE.addEventListener("change", () => fold(false));

  function showNotifyButton() {
    notify.hidden = !("Notification" in window) || Notification.permission !== "default";
  }
  notify.addEventListener("click", async () => {
    await Notification.requestPermission(); // asked only here, on the user's click
    showNotifyButton();
  });
  showNotifyButton();

  store.on("changed", (entries) => {
    list.replaceChildren(...entries.map((entry) => {
      const link = el("a", { href: `/rooms/${encodeURIComponent(entry.slug)}/`, "aria-label": conversationName(entry) });
      link.append(el("span", { class: "conversation-name" }, entry.label));
      if (entry.unread > 0) link.append(el("span", { class: "badge unread", "aria-hidden": "true" }, String(entry.unread)));
      if (entry.mentions > 0) link.append(el("span", { class: "badge mentions", "aria-hidden": "true" }, `@${entry.mentions}`));
      if (entry.slug === store.current) link.setAttribute("aria-current", "page");
      const item = el("li", { class: entry.unread > 0 ? "conversation unread" : "conversation" });
      item.dataset.slug = entry.slug;
      item.append(link);
      return item;
    }));
    empty.hidden = entries.length > 0;
  });
}

/** A notification for a mention, when allowed and the tab is not being looked at. */
export function notifyMention({ title, body, slug }) {
  if (document.visibilityState === "visible" || !("Notification" in window) || Notification.permission !== "granted") return;
  const notification = new Notification(title, { body, tag: `mention-${slug}` });
  notification.onclick = () => {
    window.focus();
    if (!location.pathname.startsWith(`/rooms/${slug}/`)) location.href = `/rooms/${encodeURIComponent(slug)}/`;
  };
}

/** The sidebar of a page: its store, fed by GET /api/rooms/ and by `connection`'s sidebar frames.
 * `current`: the page's room slug (null on pages without a room). Exposed as `window.chatSidebar`. */
export function startSidebar({ nav, connection, current = null }) {
  const store = new SidebarStore({ current });
  window.chatSidebar = store;
  mountSidebar({ nav, store });
  const baseTitle = document.title;
  store.on("changed", () => {
    const total = store.totalUnread();
    document.title = total > 0 ? `(${total}) ${baseTitle}` : baseTitle;
  });
  store.on("mention", (entry) => notifyMention({
    title: entry.direct ? `${entry.label} wrote to you` : `You were mentioned in ${entry.label}`,
    body: "Open the conversation to read it.", slug: entry.slug,
  }));

  // One fetch at a time; a request made meanwhile fetches once more after it, with what changed since.
  let fetching = null;
  let again = false;
  async function refresh() {
    if (fetching) {
      again = true;
      return fetching;
    }
    fetching = (async () => {
      do {
        again = false;
        const result = await roomsList().catch(() => null);
        if (result?.status === 401) return toLogin();
        if (result?.ok) store.load(result.data.rooms);
      } while (again);
    })().finally(() => {
      fetching = null;
    });
    return fetching;
  }

  // A room socket carries the sidebar once asked, on each new socket (the user socket always does).
  if (current) {
    connection.onState(({ state }) => {
      if (state === "connected") connection.send({ type: "sidebar.watch" });
    });
  }
  connection.on("sidebar.changed", refresh); // sent once the socket watches the rooms, and on every change
  connection.on("sidebar.activity", (frame) => {
    if (!store.activity(frame)) refresh(); // a room we do not list yet
  });
  connection.on("sidebar.read", (frame) => {
    if (!store.read(frame)) refresh();
  });
  refresh();
  return store;
}
