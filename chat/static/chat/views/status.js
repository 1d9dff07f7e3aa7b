// What the room page says about itself: the connection line (role=status) and the alert above
// the composer, with the user-facing words for close codes and error codes.

const CLOSE_TEXT = {
  4401: "You are logged out. Log in again to chat.",
  4403: "You cannot join this room.",
  4404: "This room does not exist.",
};

export function mountStatus({ line, alert, maxLength }) {
  const errorText = {
    invalid_json: "The message could not be read by the server.",
    invalid_frame: "The server did not understand that request.",
    empty_body: "Write something before sending.",
    too_long: `Messages can be at most ${maxLength} characters.`,
    rate_limited: "You are sending messages too fast.",
    muted: "You are muted in this chat for now.",
    forbidden: "You are not allowed to do that.",
    not_found: "That message no longer exists.",
    not_persisted: "The message could not be saved. Try again.",
    room_archived: "This room is archived: it is read-only.",
    // too_many_reactions and invalid_attachment: the server's detail says which limit or file.
  };

  function connectionText({ state, code, delay }) {
    if (state === "connected") return "Connected";
    if (state === "banned") return "Your account is banned from this chat.";
    if (state === "reconnecting") {
      const wait = `${Math.max(1, Math.round(delay / 1000))} s`;
      // 4429: the user has CHAT_MAX_SOCKETS_PER_USER sockets open elsewhere; one closing lets this in.
      return code === 4429 ? `Too many open tabs or devices; trying again in ${wait}…` : `Reconnecting in ${wait}…`;
    }
    if (state === "offline") return CLOSE_TEXT[code] ?? "Offline — waiting for the network.";
    return "Connecting…";
  }

  function showConnection(next) {
    line.dataset.state = next.state;
    line.textContent = connectionText(next);
  }

  function showError(text) {
    alert.textContent = text;
    alert.hidden = !text;
  }

  /** An `error` frame (or a local check with the same code) in the user's words. */
  function showErrorCode(code, { detail, retryAfter } = {}) {
    let text = errorText[code] ?? detail;
    if (code === "rate_limited" && retryAfter) text += ` Try again in ${Math.ceil(retryAfter)} s.`;
    showError(text);
  }

  return { showConnection, showError, showErrorCode };
}
