// The room's WebSocket (or the user socket, /ws/user/, of pages without a room) and everything about the wire: connect, resume after the newest message the
// page shows (`?after=`), reconnect with backoff, hand each frame to the subscribers of its type,
// and (the Outbox) send messages that wait for their ack and go again after a reconnect. No DOM here.
import { Emitter } from "./events.js";

const PING_EVERY_MS = 25000;
const ACK_TIMEOUT_MS = 15000;
// Closes after which reconnecting cannot help: logged out, refused, no such room.
export const FATAL_CLOSE_CODES = new Set([4401, 4403, 4404]);

/** The wait (ms) a 1013 close asks for in its reason, `retry_after=<seconds>`; 0 when none. */
export function retryHint(event) {
  const match = event.code === 1013 && /retry_after=([\d.]+)/.exec(event.reason || "");
  return match ? Math.min(60, Number(match[1])) * 1000 : 0;
}

export class Connection {
  #frames = new Emitter();
  #stateHandlers = [];
  #socket = null;
  #attempt = 0;
  #reconnectTimer = null;
  #stopped = false;
  #resuming = false;

  /** `lastSeq()` is the newest seq the page shows: each (re)connection asks for what came after it;
   * null when it shows none yet (the history did not load), and the socket is then live only.
   * `path` and `readyType`: another socket than the room's (/ws/user/ says `sidebar.hello`). */
  constructor({ room = null, lastSeq = () => null, path = null, readyType = "hello" }) {
    this.room = room;
    this.lastSeq = lastSeq;
    this.path = path ?? `/ws/chat/${encodeURIComponent(room)}/`;
    this.readyType = readyType;
    this.connected = false;
    this.state = { state: "connecting" };
  }

  /** Calls `handler(frame)` for every server frame of this `type`. */
  on(type, handler) {
    return this.#frames.on(type, handler);
  }

  /** Calls `handler({state, code?, delay?})` whenever the connection state changes. */
  onState(handler) {
    this.#stateHandlers.push(handler);
  }

  start() {
    window.addEventListener("online", () => {
      if (!this.#socket && !this.#stopped) {
        this.#attempt = 0;
        this.#scheduleReconnect();
      }
    });
    window.addEventListener("offline", () => {
      if (!this.connected) this.#setState({ state: "offline" });
    });
    setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS); // keeps idle proxies from cutting the socket
    this.#connect();
  }

  /** Sends a frame if the room is connected (replay done); false when it could not go. */
  send(frame) {
    if (this.#socket && this.#socket.readyState === WebSocket.OPEN && this.connected) {
      this.#socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  #connect() {
    clearTimeout(this.#reconnectTimer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // With ?after= the server replays the gap and then says `resumed`: only then are we connected.
    // Never ?after=0 for a page that shows nothing: that would replay the room's whole history.
    const after = this.lastSeq();
    this.#resuming = after !== null;
    const query = this.#resuming ? `?after=${after}` : "";
    this.#socket = new WebSocket(`${scheme}://${location.host}${this.path}${query}`);
    this.#socket.addEventListener("message", (event) => this.#dispatch(JSON.parse(event.data)));
    this.#socket.addEventListener("close", (event) => this.#onClose(event));
  }

  #dispatch(frame) {
    if (frame.type === "resumed" || (frame.type === this.readyType && !this.#resuming)) {
      this.#attempt = 0;
      this.#setState({ state: "connected" });
    }
    this.#frames.emit(frame.type, frame);
  }

  #onClose(event) {
    this.#socket = null;
    const wasConnected = this.connected;
    this.connected = false;
    if (FATAL_CLOSE_CODES.has(event.code)) {
      this.#stopped = true;
      this.#setState({ state: "offline", code: event.code });
      return;
    }
    // 1012 (server restarting) and 4408 (we fell behind) reconnect at once to another instance.
    if (wasConnected && (event.code === 1012 || event.code === 4408)) this.#attempt = 0;
    this.#scheduleReconnect(event.code, retryHint(event));
  }

  #scheduleReconnect(code, notBefore = 0) {
    if (this.#stopped) return;
    if (!navigator.onLine) {
      this.#setState({ state: "offline" }); // the "online" event brings us back
      return;
    }
    // Exponential backoff with full jitter, capped at 30 s.
    const ceiling = Math.min(30000, 500 * 2 ** this.#attempt);
    const backoff = this.#attempt === 0 ? Math.random() * 500 : Math.random() * ceiling;
    // An instance that cannot take the join now (1013) says how long: that, spread a little,
    // unless backoff is longer.
    const delay = Math.max(backoff, notBefore * (1 + Math.random() * 0.5));
    this.#attempt += 1;
    this.#setState({ state: "reconnecting", delay, code });
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  #setState(next) {
    this.state = next;
    this.connected = next.state === "connected";
    for (const handler of this.#stateHandlers) handler(next);
  }
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

/** Our messages on their way: pending until acked, failed on an error or no ack in time. */
export class Outbox {
  #timers = new Map(); // client_id -> ack timeout

  constructor({ connection, store }) {
    this.connection = connection;
    this.store = store;
    connection.on("ack", (frame) => this.#settle(frame.client_id, "sent"));
    connection.on("error", (frame) => {
      if (frame.client_id) this.#settle(frame.client_id, "failed");
    });
    connection.onState(({ state }) => {
      if (state === "connected") this.#resendPending();
    });
  }

  /** Sends a message (`extra`: optional `reply_to`, `attachments`); returns its client_id. */
  send(body, extra = {}) {
    const entry = this.store.addPending(newClientId(), body, extra);
    this.#transmit(entry);
    return entry.clientId;
  }

  retry(clientId) {
    const entry = this.store.pending.get(clientId);
    if (!entry) return;
    this.store.setPendingStatus(clientId, "pending");
    this.#transmit(entry);
  }

  #transmit(entry) {
    clearTimeout(this.#timers.get(entry.clientId));
    const frame = { type: "message.send", body: entry.body, client_id: entry.clientId };
    if (entry.replyTo) frame.reply_to = entry.replyTo;
    if (entry.attachments.length) frame.attachments = entry.attachments;
    this.connection.send(frame);
    // Not sent now (offline) still counts down: a reconnect re-sends it before the timeout.
    this.#timers.set(entry.clientId, setTimeout(() => {
      this.#timers.delete(entry.clientId);
      this.store.setPendingStatus(entry.clientId, "failed");
    }, ACK_TIMEOUT_MS));
  }

  #settle(clientId, status) {
    if (!this.store.pending.has(clientId)) return;
    clearTimeout(this.#timers.get(clientId));
    this.#timers.delete(clientId);
    this.store.setPendingStatus(clientId, status);
  }

  #resendPending() {
    // Same client_id: the server answers a repeat with the first message's ack, never a copy.
    for (const entry of this.store.pending.values()) {
      if (entry.status === "pending") this.#transmit(entry);
    }
  }
}
