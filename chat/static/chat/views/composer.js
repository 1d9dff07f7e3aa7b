// The composer: Enter sends, Shift+Enter adds a line, the character count, the typing notices
// we send while the user writes, the @mention autocomplete (views/mention_picker.js), and the
// user's standing: off, saying until when, while staff muted them; off for good once banned.
// `drafts`: what else a send carries (the reply target, the uploaded files), each an object with
// `collect()` -> {fields} or {error}, and optionally `sent(clientId)` and `escape()` -> handled.
import { mountMentionPicker } from "./mention_picker.js";

const TYPING_SEND_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;

const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout's limit (about 24.8 days)

/** "14:05" today, else "1 Dec, 14:05", in the reader's time zone; "further notice" for year 9999. */
export function muteEndText(until) {
  if (until.getUTCFullYear() >= 9999) return "further notice";
  const time = until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (until.toDateString() === new Date().toDateString()) return time;
  return `${until.toLocaleDateString([], { day: "numeric", month: "short" })}, ${time}`;
}

export function mountComposer({
  form, input, counter, maxLength, connection, onSend, status, store, config, standingNote, sendButton,
  drafts = [], extraControls = [],
}) {
  const picker = mountMentionPicker({ input, room: config.room, username: config.username, store });
  mountStanding({ note: standingNote, controls: [input, sendButton, ...extraControls], store });
  let typingSentAt = 0;
  let typingIdleTimer = null;

  function updateCounter() {
    const length = [...input.value].length;
    counter.textContent = `${length} / ${maxLength}`;
    counter.classList.toggle("over", length > maxLength);
  }

  function noteTyping() {
    const now = Date.now();
    if (input.value && now - typingSentAt > TYPING_SEND_EVERY_MS) {
      typingSentAt = now;
      connection.send({ type: "typing", active: true });
    }
    clearTimeout(typingIdleTimer);
    typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(typingIdleTimer);
    if (typingSentAt) connection.send({ type: "typing", active: false });
    typingSentAt = 0;
  }

  function submit() {
    if (input.disabled) return; // muted, banned or archived
    const body = input.value;
    const extra = {};
    for (const draft of drafts) {
      const part = draft.collect();
      if (part.error) return status.showError(part.error);
      Object.assign(extra, part.fields);
    }
    if (!body.trim() && !extra.attachments?.length) return; // files alone may go without a word
    if ([...body].length > maxLength) {
      status.showErrorCode("too_long");
      return;
    }
    status.showError("");
    const clientId = onSend(body, extra);
    for (const draft of drafts) draft.sent?.(clientId);
    input.value = "";
    updateCounter();
    stopTyping();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (picker.handleKey(event)) return; // Enter picks a name while the list is open
    if (event.key === "Escape" && drafts.some((draft) => draft.escape?.())) {
      event.preventDefault();
      return;
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", () => {
    updateCounter();
    noteTyping();
  });
  updateCounter();
}

/** Muted: the note says until when and the composer is off, until an unmute or the time passes.
 * Archiving switches the same controls (views/members.js): ours is applied after it. */
function mountStanding({ note, controls, store }) {
  let archived = controls[0].disabled; // the page renders an archived room's composer off
  let endTimer = null;

  function mutedNow() {
    return store.mutedUntil !== null && store.mutedUntil > new Date();
  }

  function apply() {
    clearTimeout(endTimer);
    const muted = mutedNow();
    note.textContent = muted ? `You are muted until ${muteEndText(store.mutedUntil)}` : "";
    note.hidden = !muted;
    for (const control of controls) control.disabled = archived || muted || store.banned;
    const left = muted ? store.mutedUntil - new Date() : 0;
    if (muted && left < MAX_TIMER_MS) endTimer = setTimeout(apply, left + 50);
  }

  store.on("standing", apply);
  store.on("room.updated", (room) => {
    archived = room.archived;
    queueMicrotask(apply); // after views/members.js set the controls for the archive alone
  });
}
