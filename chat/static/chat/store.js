// The room's state, kept apart from the DOM: messages by seq, our pending sends, who is online and
// typing, how far the user has read. It announces each change; the views render from it.
//
// The entry module exposes it as `window.chat` for tests and debugging: `connected`, `state`,
// `lastSeq`, `online`, `historyLoaded`, `hasOlder`, `readSeq`, `mutedUntil`, `banned`, `replyTarget`.
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
    this.mutedUntil = null; // a Date while staff muted the user (hello, standing), else null
    this.banned = false;
    this.replies = new Map(); // parent id -> {base, horizon, seen: Map<reply id, seq>} (replyCount)
    this.replyTarget = null; // the message the composer answers, or null
  }

  /** The user's standing from `hello` or `standing`: `muted_until` an ISO time or null. */
  setStanding(mutedUntil) {
    this.mutedUntil = mutedUntil ? new Date(mutedUntil) : null;
    this.emit("standing", this.standing());
  }

  setBanned() {
    this.banned = true;
    this.emit("standing", this.standing());
  }

  standing() {
    return { mutedUntil: this.mutedUntil, banned: this.banned };
  }

  setConnection(state) {
    this.state = state;
    this.connected = state === "connected";
  }

  // --- messages ---

  /** Adds a message unless its seq is already here (replays overlap); true when added. `horizon`:
   * for a history page, the newest seq its `reply_count`s may already include. */
  addMessage(message, horizon = 0) {
    if (this.messages.has(message.seq)) return false;
    this.messages.set(message.seq, message);
    this.seqById.set(message.id, message.seq);
    this.lastSeq = Math.max(this.lastSeq, message.seq);
    this.#noteReplies(message, horizon);
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

  /** A history page: its reply counts cover every reply up to the newest message known now. */
  addPage(messages) {
    const horizon = Math.max(this.lastSeq, ...messages.map((message) => message.seq));
    for (const message of messages) this.addMessage(message, horizon);
  }

  deleteMessage({ id, seq }) {
    const message = this.messages.get(seq);
    this.messages.delete(seq);
    this.seqById.delete(id);
    if (message?.reply_to) this.#forgetReply(message);
    if (this.replyTarget?.id === id) this.setReplyTarget(null);
    // Quotes of it say so now (a moderator's hide arrives as a delete too: we cannot tell them apart).
    for (const reply of this.messages.values()) {
      if (reply.reply_to?.id === id) reply.reply_to = { ...reply.reply_to, excerpt: "", state: "deleted" };
    }
    this.emit("message.deleted", { id, seq });
  }

  // --- reactions, attachments, replies (contract §8) ---

  /** A `reaction` frame: the message's full reaction list. */
  setReactions({ seq, reactions }) {
    const message = this.messages.get(seq);
    if (!message) return;
    message.reactions = reactions;
    this.emit("message.reactions", message);
  }

  /** A `message.attachments` frame: what is left after staff removed one. */
  setAttachments({ seq, attachments }) {
    const message = this.messages.get(seq);
    if (!message) return;
    message.attachments = attachments;
    this.emit("message.attachments", message);
  }

  /** Visible replies to message `id`: the history's count plus replies seen after it, each once. */
  replyCount(id) {
    const entry = this.replies.get(id);
    if (!entry) return 0;
    let count = entry.base;
    for (const seq of entry.seen.values()) if (seq > entry.horizon) count += 1;
    return count;
  }

  setReplyTarget(id) {
    this.replyTarget = id ? this.messageById(id) ?? null : null;
    this.emit("reply.target", this.replyTarget);
  }

  #replyEntry(id) {
    if (!this.replies.has(id)) this.replies.set(id, { base: 0, horizon: 0, seen: new Map() });
    return this.replies.get(id);
  }

  #noteReplies(message, horizon) {
    if (typeof message.reply_count === "number") {
      const entry = this.#replyEntry(message.id);
      entry.base = message.reply_count;
      entry.horizon = horizon;
      this.emit("replies", message.id);
    }
    const parent = message.reply_to?.id;
    if (!parent) return;
    this.#replyEntry(parent).seen.set(message.id, message.seq);
    this.emit("replies", parent);
  }

  #forgetReply(message) {
    const entry = this.replies.get(message.reply_to.id);
    const seq = entry?.seen.get(message.id);
    if (seq === undefined) return;
    entry.seen.delete(message.id);
    if (seq <= entry.horizon) entry.base = Math.max(0, entry.base - 1); // the history had counted it
    this.emit("replies", message.reply_to.id);
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

  /** `extra`: the send's optional `reply_to` and `attachments` (ids). */
  addPending(clientId, body, extra = {}) {
    const entry = { clientId, body, status: "pending", replyTo: extra.reply_to ?? null, attachments: extra.attachments ?? [] };
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

/** The conversations of the user's sidebar, kept apart from the DOM: the rooms they joined, were
 * added to or have a DM in, each with unread and mention counts, updated live by the sidebar
 * frames. `current`: the room on screen (its counts stay 0: the user is reading it). */
export class SidebarStore extends Emitter {
  constructor({ current = null } = {}) {
    super();
    this.current = current;
    this.rooms = new Map(); // slug -> {slug, name, label, private, direct, unread, mentions, lastSeq, lastActivity}
    this.loaded = false;
  }

  /** The room list of GET /api/rooms/: only the rooms in the user's sidebar (`joined`). */
  load(rooms) {
    this.rooms = new Map(rooms.filter((room) => room.joined).map((room) => [room.slug, {
      slug: room.slug,
      name: room.name,
      label: room.direct && room.dm_with ? room.dm_with : room.name,
      private: room.private,
      direct: room.direct,
      unread: room.slug === this.current ? 0 : room.unread,
      mentions: room.slug === this.current ? 0 : room.mentions ?? 0,
      lastSeq: room.last_seq,
      lastActivity: room.last_activity ? Date.parse(room.last_activity) : 0,
    }]));
    this.loaded = true;
    this.emit("changed", this.sorted());
  }

  /** A `sidebar.activity` frame; false when the room is not in the sidebar (fetch it again). */
  activity({ room, seq, mention }) {
    const entry = this.rooms.get(room);
    if (!entry) return false;
    if (seq <= entry.lastSeq) return true; // counted already (the list was fetched after it)
    entry.lastSeq = seq;
    entry.lastActivity = Date.now();
    if (room !== this.current) {
      entry.unread += 1;
      if (mention) entry.mentions += 1;
    }
    this.emit("changed", this.sorted());
    if (mention && room !== this.current) this.emit("mention", entry);
    return true;
  }

  /** `sidebar.read`: the user read the room elsewhere; false when messages came after `seq` (the
   * counts are then only known to the server: fetch the list again). */
  read({ room, seq }) {
    const entry = this.rooms.get(room);
    if (!entry || seq < entry.lastSeq) return false;
    entry.unread = 0;
    entry.mentions = 0;
    this.emit("changed", this.sorted());
    return true;
  }

  /** Rooms with news first (mentions, then unread), then by last activity, newest first. */
  sorted() {
    const rank = (entry) => (entry.mentions > 0 ? 0 : entry.unread > 0 ? 1 : 2);
    return [...this.rooms.values()].sort((a, b) => rank(a) - rank(b) || b.lastActivity - a.lastActivity
      || a.label.localeCompare(b.label));
  }

  totalUnread() {
    let total = 0;
    for (const entry of this.rooms.values()) total += entry.unread;
    return total;
  }
}
