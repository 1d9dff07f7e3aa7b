// A minimal publish/subscribe hub: the connection and the store announce, the views listen, so a
// new feature subscribes to what it needs without the announcer knowing about it.

export class Emitter {
  #handlers = new Map(); // type -> Set of handlers

  /** Calls `handler(payload)` on every `emit(type, payload)`; returns the unsubscribe function. */
  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.#handlers.get(type).delete(handler);
  }

  emit(type, payload) {
    for (const handler of this.#handlers.get(type) ?? []) handler(payload);
  }
}
