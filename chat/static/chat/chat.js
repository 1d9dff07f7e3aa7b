// The room page's client: history, live messages, resume without gaps, pending/sent/failed sends,
// presence, typing, edit/delete/report. Messages are kept by `seq`; bodies are only ever text.
//
// `window.chat` exposes the client's state for tests and debugging: `connected`, `state`,
// `lastSeq`, `online`, `historyLoaded`.

const config = JSON.parse(document.getElementById("chat-config").textContent);
const $ = (id) => document.getElementById(id);
const list = $("messages");
const statusEl = $("connection");
const input = $("message-input");
const counter = $("char-count");
const composerError = $("composer-error");
const onlineList = $("online");
const typingEl = $("typing");
const olderButton = $("load-older");

const ACK_TIMEOUT_MS = 15000;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;
const TYPING_SHOW_MS = 6000;
const PAGE = 50;

const state = {
  connected: false,
  state: "connecting",
  lastSeq: 0,
  online: [],
  historyLoaded: false,
  hasOlder: false,
  readSeq: config.readSeq ?? 0,
};
window.chat = state;

const bySeq = new Map(); // seq -> message object
const byId = new Map(); // id -> seq
const pending = new Map(); // client_id -> {body, el, timer, seq?, status}
let socket = null;
let attempt = 0;
let reconnectTimer = null;
let stopped = false;
let loadingOlder = false;

const ERROR_TEXT = {
  invalid_json: "The message could not be read by the server.",
  invalid_frame: "The server did not understand that request.",
  empty_body: "Write something before sending.",
  too_long: `Messages can be at most ${config.maxLength} characters.`,
  rate_limited: "You are sending messages too fast.",
  muted: "You are muted in this chat for now.",
  forbidden: "You are not allowed to do that.",
  not_found: "That message no longer exists.",
  not_persisted: "The message could not be saved. Try again.",
};

const CLOSE_TEXT = {
  4401: "You are logged out. Log in again to chat.",
  4403: "You cannot join this room.",
  4404: "This room does not exist.",
};

function csrfToken() {
  return document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] ?? "";
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

// --- connection state ---

function setState(next, text) {
  state.state = next;
  state.connected = next === "connected";
  statusEl.dataset.state = next;
  statusEl.textContent = text;
}

function showError(text) {
  composerError.textContent = text;
  composerError.hidden = !text;
}

// --- rendering ---

function nearBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function formatTime(iso) {
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderMessage(message) {
  const own = message.author.id === config.userId;
  const li = el("li", { class: own ? "message own" : "message" });
  li.dataset.seq = String(message.seq);
  li.dataset.id = message.id;
  const head = el("div", { class: "message-head" });
  head.append(el("span", { class: "author" }, message.author.username));
  const time = el("time", { datetime: message.created_at, title: new Date(message.created_at).toLocaleString() },
    formatTime(message.created_at));
  head.append(time);
  if (message.edited_at) head.append(el("span", { class: "edited" }, "(edited)"));
  head.append(messageActions(message, own));
  li.append(head, el("p", { class: "body" }, message.body));
  return li;
}

function messageActions(message, own) {
  const actions = el("div", { class: "actions" });
  if (own || config.isStaff) {
    if (own) actions.append(actionButton("Edit", () => startEdit(message.id)));
    actions.append(actionButton("Delete", () => deleteMessage(message.id)));
  }
  if (!own) actions.append(actionButton("Report", () => startReport(message.id)));
  return actions;
}

function actionButton(label, onClick) {
  const button = el("button", { type: "button", class: "link-button" }, label);
  button.addEventListener("click", onClick);
  return button;
}

function insertBySeq(li, seq) {
  // Messages arrive mostly in order: walk back from the end to find the slot.
  let after = list.lastElementChild;
  while (after && Number(after.dataset.seq ?? Infinity) > seq) after = after.previousElementSibling;
  if (after) after.after(li);
  else list.prepend(li);
}

function addMessage(message) {
  if (bySeq.has(message.seq)) return false;
  const stick = nearBottom();
  bySeq.set(message.seq, message);
  byId.set(message.id, message.seq);
  state.lastSeq = Math.max(state.lastSeq, message.seq);
  const li = renderMessage(message);
  const mine = message.client_id && message.author.id === config.userId ? pending.get(message.client_id) : null;
  if (mine) {
    // Our own message, live before its ack: it takes the pending bubble's place in seq order.
    mine.el.remove();
    mine.el = li;
    mine.seq = message.seq;
    markPending(mine, mine.status);
    if (mine.status === "sent") pending.delete(message.client_id);
  }
  insertBySeq(li, message.seq);
  if (stick) list.scrollTop = list.scrollHeight;
  if (state.historyLoaded) noteRead();
  return true;
}

function markPending(entry, status) {
  entry.status = status;
  entry.el.dataset.status = status;
  entry.el.classList.toggle("pending", status === "pending");
  entry.el.classList.toggle("failed", status === "failed");
  entry.el.querySelector(".send-state")?.remove();
  if (status === "sent") return;
  const note = el("span", { class: "send-state" }, status === "pending" ? "sending…" : "not sent ");
  if (status === "failed") {
    note.append(actionButton("Retry", () => retry(entry)));
  }
  const head = entry.el.querySelector(".message-head");
  head.insertBefore(note, head.querySelector(".actions"));
}

// --- history ---

async function fetchMessages(params) {
  const query = new URLSearchParams({ limit: String(PAGE), ...params });
  const response = await fetch(`/api/rooms/${encodeURIComponent(config.room)}/messages/?${query}`, {
    headers: { Accept: "application/json" },
  });
  if (response.status === 401) {
    window.location.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
    throw new Error("logged out");
  }
  if (!response.ok) throw new Error(`history request failed (${response.status})`);
  return response.json();
}

const jumpTo = Number(new URLSearchParams(location.search).get("at")) || null;

async function loadHistory() {
  // From a search result (?at=<seq>): the page around that message, newer ones follow by resume.
  const page = await fetchMessages(jumpTo ? { before: String(jumpTo + Math.floor(PAGE / 2)) } : {});
  for (const message of page.messages) addMessage(message);
  state.hasOlder = page.has_more;
  olderButton.hidden = !page.has_more;
  showNewDivider();
  const target = jumpTo && list.querySelector(`li[data-seq="${jumpTo}"]`);
  if (target) {
    target.classList.add("highlight");
    target.scrollIntoView({ block: "center" });
  } else {
    list.scrollTop = list.scrollHeight;
  }
  state.historyLoaded = true;
}

// --- read state ---

function showNewDivider() {
  const firstNew = [...list.querySelectorAll("li.message:not(.own)")].find((li) => Number(li.dataset.seq) > state.readSeq);
  if (!firstNew || list.querySelector(".new-divider")) return;
  const divider = el("li", { class: "new-divider", role: "separator" }, "New messages");
  divider.dataset.seq = String(state.readSeq + 0.5); // keeps insertBySeq's order
  firstNew.before(divider);
}

let readTimer = null;
function noteRead() {
  // Read = this tab is visible and scrolled to the newest message.
  if (document.visibilityState !== "visible" || !nearBottom() || state.lastSeq <= state.readSeq) return;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    if (state.lastSeq > state.readSeq && send({ type: "read", seq: state.lastSeq })) state.readSeq = state.lastSeq;
  }, 800);
}
list.addEventListener("scroll", noteRead);
document.addEventListener("visibilitychange", noteRead);

async function loadOlder() {
  if (loadingOlder || !state.hasOlder) return;
  const oldest = Math.min(...bySeq.keys());
  if (!Number.isFinite(oldest)) return;
  loadingOlder = true;
  const before = list.scrollHeight;
  try {
    const page = await fetchMessages({ before: String(oldest) });
    for (const message of page.messages) addMessage(message);
    state.hasOlder = page.has_more;
    olderButton.hidden = !page.has_more;
    list.scrollTop += list.scrollHeight - before; // keep the reader's place
  } catch (err) {
    showError("Could not load older messages. Scroll up to try again.");
  } finally {
    loadingOlder = false;
  }
}

list.addEventListener("scroll", () => {
  if (list.scrollTop < 60) loadOlder();
});
olderButton.addEventListener("click", loadOlder);

// --- the socket ---

function connect() {
  clearTimeout(reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws/chat/${encodeURIComponent(config.room)}/?after=${state.lastSeq}`;
  socket = new WebSocket(url);
  socket.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => onClose(event));
}

function send(frame) {
  if (socket && socket.readyState === WebSocket.OPEN && state.connected) {
    socket.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

function onClose(event) {
  socket = null;
  const wasConnected = state.connected;
  state.connected = false;
  typingUsers.clear();
  renderTyping();
  if (CLOSE_TEXT[event.code]) {
    stopped = true;
    setState("offline", CLOSE_TEXT[event.code]);
    if (event.code === 4401) window.location.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
    return;
  }
  // 1012 (server restarting) and 4408 (we fell behind) reconnect at once to another instance.
  if (wasConnected && (event.code === 1012 || event.code === 4408)) attempt = 0;
  scheduleReconnect();
}

function scheduleReconnect() {
  if (stopped) return;
  if (!navigator.onLine) {
    setState("offline", "Offline — waiting for the network.");
    return;
  }
  // Exponential backoff with full jitter, capped at 30 s.
  const ceiling = Math.min(30000, 500 * 2 ** attempt);
  const delay = attempt === 0 ? Math.random() * 500 : Math.random() * ceiling;
  attempt += 1;
  setState("reconnecting", `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
  reconnectTimer = setTimeout(connect, delay);
}

window.addEventListener("online", () => {
  if (!socket && !stopped) {
    attempt = 0;
    scheduleReconnect();
  }
});
window.addEventListener("offline", () => {
  if (!state.connected) setState("offline", "Offline — waiting for the network.");
});

const handlers = {
  hello(frame) {
    setOnline(frame.online);
  },
  resumed() {
    attempt = 0;
    setState("connected", "Connected");
    showError("");
    resendPending();
    noteRead();
  },
  message(frame) {
    const { type, ...message } = frame;
    addMessage(message);
  },
  ack(frame) {
    const entry = pending.get(frame.client_id);
    if (!entry) return;
    clearTimeout(entry.timer);
    markPending(entry, "sent");
    // Keep the entry until its live copy arrives, so that copy replaces the bubble, not joins it.
    if (entry.seq !== undefined) pending.delete(frame.client_id);
  },
  "message.edited"(frame) {
    const message = bySeq.get(frame.seq);
    if (!message) return;
    message.body = frame.body;
    message.edited_at = frame.edited_at;
    const old = list.querySelector(`li[data-seq="${frame.seq}"]`);
    if (old) old.replaceWith(renderMessage(message));
  },
  "message.deleted"(frame) {
    bySeq.delete(frame.seq);
    byId.delete(frame.id);
    list.querySelector(`li[data-seq="${frame.seq}"]`)?.remove();
  },
  typing(frame) {
    if (frame.user === config.username) return;
    clearTimeout(typingUsers.get(frame.user));
    if (frame.active) typingUsers.set(frame.user, setTimeout(() => { typingUsers.delete(frame.user); renderTyping(); }, TYPING_SHOW_MS));
    else typingUsers.delete(frame.user);
    renderTyping();
  },
  presence(frame) {
    setOnline(frame.online);
  },
  pong() {},
  read(frame) {
    state.readSeq = Math.max(state.readSeq, frame.seq); // another tab or device read this far
  },
  error(frame) {
    const entry = frame.client_id ? pending.get(frame.client_id) : null;
    if (entry) {
      clearTimeout(entry.timer);
      markPending(entry, "failed");
    }
    let text = ERROR_TEXT[frame.code] ?? frame.detail;
    if (frame.code === "rate_limited" && frame.retry_after) text += ` Try again in ${Math.ceil(frame.retry_after)} s.`;
    showError(text);
  },
};

function onFrame(frame) {
  handlers[frame.type]?.(frame);
}

// Every connection asks for ?after=<last seq seen>, so the server always ends the replay with
// `resumed`; only then is the client "connected" and pending sends go out again.

// --- sending ---

function sendMessage(body) {
  const clientId = newClientId();
  const li = el("li", { class: "message own pending" });
  li.dataset.clientId = clientId;
  const head = el("div", { class: "message-head" });
  head.append(el("span", { class: "author" }, config.username));
  li.append(head, el("p", { class: "body" }, body));
  list.append(li);
  list.scrollTop = list.scrollHeight;
  const entry = { clientId, body, el: li, timer: null, status: "pending" };
  pending.set(clientId, entry);
  markPending(entry, "pending");
  transmit(entry);
}

function transmit(entry) {
  clearTimeout(entry.timer);
  send({ type: "message.send", body: entry.body, client_id: entry.clientId });
  // Not sent now (offline) still counts down: a reconnect re-sends it before the timeout.
  entry.timer = setTimeout(() => markPending(entry, "failed"), ACK_TIMEOUT_MS);
}

function retry(entry) {
  showError("");
  markPending(entry, "pending");
  transmit(entry);
}

function resendPending() {
  // Same client_id: the server answers a repeat with the first message's ack, never a copy.
  for (const entry of pending.values()) {
    if (entry.status === "pending") transmit(entry);
  }
}

function updateCounter() {
  const length = [...input.value].length;
  counter.textContent = `${length} / ${config.maxLength}`;
  counter.classList.toggle("over", length > config.maxLength);
}

function submit() {
  const body = input.value;
  if (!body.trim()) return;
  if ([...body].length > config.maxLength) {
    showError(ERROR_TEXT.too_long);
    return;
  }
  showError("");
  sendMessage(body);
  input.value = "";
  updateCounter();
  stopTyping();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
  input.focus();
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});
input.addEventListener("input", () => {
  updateCounter();
  noteTyping();
});

// --- typing ---

const typingUsers = new Map(); // username -> expiry timer
let typingSentAt = 0;
let typingIdleTimer = null;

function noteTyping() {
  const now = Date.now();
  if (input.value && now - typingSentAt > TYPING_SEND_EVERY_MS) {
    typingSentAt = now;
    send({ type: "typing", active: true });
  }
  clearTimeout(typingIdleTimer);
  typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingIdleTimer);
  if (typingSentAt) send({ type: "typing", active: false });
  typingSentAt = 0;
}

function renderTyping() {
  const names = [...typingUsers.keys()].sort();
  if (names.length === 0) typingEl.textContent = "";
  else if (names.length === 1) typingEl.textContent = `${names[0]} is typing…`;
  else if (names.length <= 3) typingEl.textContent = `${names.join(", ")} are typing…`;
  else typingEl.textContent = "Several people are typing…";
}

// --- presence ---

function setOnline(names) {
  state.online = [...names].sort();
  onlineList.replaceChildren(...state.online.map((name) => {
    const li = el("li", {}, name);
    if (name !== config.username && !config.direct) {
      const button = actionButton("Message", () => openDirect(name));
      button.setAttribute("aria-label", `Message ${name} directly`);
      li.append(" ", button);
    }
    return li;
  }));
}

async function openDirect(username) {
  const response = await fetch("/api/dms/", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify({ username }),
  });
  const data = await response.json().catch(() => ({}));
  if (response.ok) window.location.href = `/rooms/${data.slug}/`;
  else showError(data.error?.detail ?? "Could not open a direct conversation.");
}

// --- edit, delete, report ---

function inlineForm(li, { label, value, submitLabel, onSubmit }) {
  li.querySelector(".inline-form")?.remove();
  const form = el("form", { class: "inline-form" });
  const id = `inline-${li.dataset.seq}`;
  const field = el("textarea", { id, rows: 2 });
  field.value = value;
  form.append(el("label", { for: id, class: "visually-hidden" }, label), field,
    el("button", { type: "submit" }, submitLabel));
  const cancel = el("button", { type: "button", class: "link-button" }, "Cancel");
  cancel.addEventListener("click", () => form.remove());
  form.append(cancel);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = field.value.trim();
    if (!text) return;
    onSubmit(text);
    form.remove();
  });
  field.addEventListener("keydown", (event) => {
    if (event.key === "Escape") form.remove();
  });
  li.append(form);
  field.focus();
}

function liFor(id) {
  const seq = byId.get(id);
  return seq === undefined ? null : list.querySelector(`li[data-seq="${seq}"]`);
}

function startEdit(id) {
  const li = liFor(id);
  if (!li) return;
  inlineForm(li, {
    label: "Edit message",
    value: bySeq.get(byId.get(id)).body,
    submitLabel: "Save",
    onSubmit: (body) => send({ type: "message.edit", id, body }) || showError("Not connected; try again shortly."),
  });
}

function deleteMessage(id) {
  if (!window.confirm("Delete this message for everyone?")) return;
  send({ type: "message.delete", id }) || showError("Not connected; try again shortly.");
}

function startReport(id) {
  const li = liFor(id);
  if (!li) return;
  inlineForm(li, {
    label: "Why are you reporting this message?",
    value: "",
    submitLabel: "Report",
    onSubmit: (reason) => {
      if (send({ type: "message.report", id, reason })) showError("Thanks — the moderators will look at it.");
      else showError("Not connected; try again shortly.");
    },
  });
}

// --- members (owners of private rooms) ---

const memberForm = $("add-member");
memberForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const note = memberForm.querySelector(".form-status");
  const username = memberForm.elements.username.value.trim();
  if (!username) return;
  const response = await fetch(`/api/rooms/${encodeURIComponent(config.room)}/members/`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify({ username }),
  });
  const data = await response.json().catch(() => ({}));
  note.textContent = response.ok ? `${username} is now a member.` : (data.error?.detail ?? "Could not add the member.");
  if (response.ok) memberForm.reset();
});

// --- start ---

updateCounter();
setInterval(() => send({ type: "ping" }), 25000); // keeps idle proxies from cutting the socket
loadHistory()
  .catch(() => showError("Could not load the history; showing live messages only."))
  .finally(connect);
