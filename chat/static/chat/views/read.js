// Read state: the room counts as read up to its newest message once that message has been on
// screen (tab visible, list scrolled to the bottom); the server tells the user's other tabs.

const READ_DELAY_MS = 800;

export function trackRead({ list, atBottom, store, connection }) {
  let timer = null;

  function note() {
    if (document.visibilityState !== "visible" || !atBottom() || store.lastSeq <= store.readSeq) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (store.lastSeq > store.readSeq && connection.send({ type: "read", seq: store.lastSeq })) store.markRead(store.lastSeq);
    }, READ_DELAY_MS);
  }

  list.addEventListener("scroll", note);
  document.addEventListener("visibilitychange", note);
  store.on("message.added", () => {
    if (store.historyLoaded) note();
  });
  connection.on("resumed", note);
  connection.on("read", (frame) => store.markRead(frame.seq)); // another tab or device read this far
}
