// The room page: builds the store, the connection and the views, and routes each server frame
// to the state it changes. A new frame type is one more `connection.on(...)` here.
import { request, toLogin } from "./api.js";
import { Connection, Outbox } from "./connection.js";
import { $, authorName } from "./dom.js";
import { RoomStore } from "./store.js";
import { mountAttachments } from "./views/attachments.js";
import { mountComposer } from "./views/composer.js";
import { mountMembers } from "./views/members.js";
import { createMessageActions } from "./views/message_actions.js";
import { mountMessages } from "./views/messages.js";
import { mountPresence } from "./views/presence.js";
import { mountReactions } from "./views/reactions.js";
import { mountReplies, mountReplyBar } from "./views/replies.js";
import { mentionsUser, notifyMention, startSidebar } from "./views/sidebar.js";
import { trackRead } from "./views/read.js";
import { mountStatus } from "./views/status.js";
import { mountUploads } from "./views/uploads.js";

const config = JSON.parse($("chat-config").textContent);
const store = new RoomStore({ userId: config.userId, readSeq: config.readSeq ?? 0 });
window.chat = store;

const connection = new Connection({ room: config.room, lastSeq: () => store.resumeFrom() });
const outbox = new Outbox({ connection, store });
const status = mountStatus({ line: $("connection"), alert: $("composer-error"), maxLength: config.maxLength });
const { showError } = status;

connection.onState((next) => {
  store.setConnection(next.state);
  status.showConnection(store.banned ? { state: "banned" } : next);
  if (!connection.connected) store.clearTyping(); // nobody's typing reaches a closed socket
  if (next.code === 4401) toLogin();
  if (next.code === 4403) checkBanned();
});
connection.on("hello", (frame) => {
  store.setOnline(frame.online);
  store.setStanding(frame.muted_until ?? null);
});
connection.on("standing", (frame) => store.setStanding(frame.muted_until));
connection.on("presence", (frame) => store.setOnline(frame.online));
connection.on("message", ({ type, ...message }) => store.addMessage(message));
connection.on("message.edited", (frame) => store.editMessage(frame));
connection.on("message.deleted", (frame) => store.deleteMessage(frame));
connection.on("reaction", (frame) => store.setReactions(frame));
connection.on("message.attachments", (frame) => store.setAttachments(frame));
connection.on("room.updated", ({ room }) => store.emit("room.updated", room)); // views/members.js shows it
connection.on("typing", (frame) => {
  if (frame.user !== config.username) store.setTyping(frame.user, frame.active);
});
connection.on("resumed", () => showError(""));
connection.on("error", (frame) => status.showErrorCode(frame.code, { detail: frame.detail, retryAfter: frame.retry_after }));

const list = $("messages");
const reactions = mountReactions({ list, store, connection, config, showError });
const replies = mountReplies({ list, store, showError, loadOlder: () => messages.loadOlder() });
const attachments = mountAttachments({ list, store });
const actions = createMessageActions({ store, connection, config, showError, reactions });
const messages = mountMessages({
  list, olderButton: $("load-older"), store, config, actions, showError,
  parts: { quote: replies.quote, pendingQuote: replies.pendingQuote, below: [attachments.render, reactions.row, replies.countLine] },
  onRetry: (clientId) => {
    showError("");
    outbox.retry(clientId);
  },
});
trackRead({ list, atBottom: messages.atBottom, store, connection });
mountPresence({ onlineList: $("online"), typingLine: $("typing"), store, config, showError });
const input = $("message-input");
const uploads = mountUploads({
  box: $("uploads"), button: $("attach-file"), picker: $("attach-input"), input, room: config.room, store, showError,
  dropZones: [document.querySelector(".messages-pane"), $("composer")],
});
mountComposer({
  form: $("composer"), input, counter: $("char-count"), maxLength: config.maxLength,
  connection, status, onSend: (body, extra) => outbox.send(body, extra),
  store, config, // the @mention autocomplete: the room's members, who is online, who wrote
  standingNote: $("composer-standing"), sendButton: $("send"), extraControls: [$("attach-file")],
  drafts: [mountReplyBar({ bar: $("reply-bar"), input, store }), uploads],
});
if ($("add-member")) mountMembers({ form: $("add-member"), room: config.room });

// The sidebar's frames come on this room's socket; a mention here notifies too while the tab is hidden.
if ($("conversations")) startSidebar({ nav: $("conversations"), connection, current: config.room });
store.on("message.added", ({ message }) => {
  if (!connection.connected || message.author.id === config.userId) return; // live ones only, not ours
  if (config.direct || mentionsUser(message.body, config.username)) {
    notifyMention({ title: `${authorName(message.author)} mentioned you`, body: message.body, slug: config.room });
  }
});

// 4403 is a ban or no access to this room: the API tells a banned user so (docs/protocol.md "Your standing").
async function checkBanned() {
  const result = await request("GET", `/api/rooms/${encodeURIComponent(config.room)}/`).catch(() => null);
  if (result?.status === 403 && result.data.error?.code === "banned") {
    store.setBanned();
    showError("");
    status.showConnection({ state: "banned" });
  }
}

// From a search result (?at=<seq>): open at that message.
const jumpTo = Number(new URLSearchParams(location.search).get("at")) || null;
messages.loadHistory(jumpTo)
  .catch(() => showError("Could not load the history; showing live messages only."))
  .finally(() => connection.start());
