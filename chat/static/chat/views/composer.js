// The composer: Enter sends, Shift+Enter adds a line, the character count, the typing notices
// we send while the user writes, and the @mention autocomplete (views/mention_picker.js).
import { mountMentionPicker } from "./mention_picker.js";

const TYPING_SEND_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;

export function mountComposer({ form, input, counter, maxLength, connection, onSend, status, store, config }) {
  const picker = mountMentionPicker({ input, room: config.room, username: config.username, store });
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
    const body = input.value;
    if (!body.trim()) return;
    if ([...body].length > maxLength) {
      status.showErrorCode("too_long");
      return;
    }
    status.showError("");
    onSend(body);
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
