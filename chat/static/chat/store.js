// The room's state, kept apart from the DOM: messages by seq, our pending sends, who is online and
// typing, how far the user has read. It announces each change; the views render from it.
//
// The entry module exposes it as `window.chat` for tests and debugging: `connected`, `state`,
// `lastSeq`, `online`, `historyLoaded`, `hasOlder`, `readSeq`.
import { Emitter } from "./events.js";

const TYPING_SHOW_MS = 6000;

export class RoomStore extends Emitter {
  constructor({ userId, readSeq = 0 }) {
    super();
    this.userId = userId;
    this.connected = false;
    this.state = "connecting";
    this.lastSeq = 0;
    this.online = [];
    this.historyLoaded = false;
    this.hasOlder = false;
    this.readSeq = readSeq;
    this.messages = new Map(); // seq -> message object
    this.seqById = new Map(); // id -> seq
    this.pending = new Map(); // client_id -> {clientId, body, status: "pending" | "sent" | "failed", seq?}
    this.typing = new Map(); // username -> expiry timer
  }

  setConnection(state) {
    this.state = state;
    this.connected = state === "connected";
  }

  // --- messages ---

  /** Adds a message unless its seq is already here (replays overlap); true when added. */
  addMessage(message) {
    if (this.messages.has(message.seq)) return false;
    this.messages.set(message.seq, message);
    this.seqById.set(message.id, message.seq);
    this.lastSeq = Math.max(this.lastSeq, message.seq);
    const mine = message.client_id && message.author.id === this.userId ? this.pending.get(message.client_id) ?? null : null;
    if (mine) {
      mine.seq = message.seq;
      if (mine.status === "sent") this.pending.delete(mine.clientId); // acked already: nothing left to wait for
    }
    this.emit("message.added", { message, mine });
    return true;
  }

  editMessage({ seq, body, edited_at: editedAt }) {
    const message = this.messages.get(seq);
    if (!message) return;
    message.body = body;
    message.edited_at = editedAt;
    this.emit("message.edited", message);
  }

  deleteMessage({ id, seq }) {
    this.messages.delete(seq);
    this.seqById.delete(id);
    this.emit("message.deleted", { id, seq });
  }

  messageById(id) {
    const seq = this.seqById.get(id);
    return seq === undefined ? undefined : this.messages.get(seq);
  }

  oldestSeq() {
    return Math.min(...this.messages.keys());
  }

  /** Where a (re)connection resumes: after the newest message shown; null while the page shows
   * none and its history did not load (then the socket is live only, never a whole-room replay). */
  resumeFrom() {
    return this.lastSeq > 0 || this.historyLoaded ? this.lastSeq : null;
  }

  // --- our sends ---

  addPending(clientId, body) {
    const entry = { clientId, body, status: "pending" };
    this.pending.set(clientId, entry);
    this.emit("pending.added", entry);
    return entry;
  }

  setPendingStatus(clientId, status) {
    const entry = this.pending.get(clientId);
    if (!entry) return;
    entry.status = status;
    // An acked entry stays until its live copy arrives, so that copy replaces the bubble, not joins it.
    if (status === "sent" && entry.seq !== undefined) this.pending.delete(clientId);
    this.emit("pending.changed", entry);
  }

  // --- presence, typing, read state ---

  setOnline(names) {
    this.online = [...names].sort();
    this.emit("online", this.online);
  }

  setTyping(username, active) {
    clearTimeout(this.typing.get(username));
    if (active) {
      // A "stopped" that never comes (closed tab) must not leave the name up for good.
      this.typing.set(username, setTimeout(() => this.setTyping(username, false), TYPING_SHOW_MS));
    } else {
      this.typing.delete(username);
    }
    this.emit("typing", this.typingNames());
  }

  clearTyping() {
    for (const timer of this.typing.values()) clearTimeout(timer);
    this.typing.clear();
    this.emit("typing", []);
  }

  typingNames() {
    return [...this.typing.keys()].sort();
  }

  /** The read mark only moves forward (another tab or device may have read further). */
  markRead(seq) {
    this.readSeq = Math.max(this.readSeq, seq);
  }
}
