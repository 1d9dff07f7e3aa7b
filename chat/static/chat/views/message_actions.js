// Reply, react, edit, delete and report: the buttons in a message's head and the inline forms they
// open (the reaction picker is views/reactions.js's; a reply is the composer's, via the store).
import { actionButton, el } from "../dom.js";

export function createMessageActions({ store, connection, config, showError, reactions = null }) {
  const notConnected = () => showError("Not connected; try again shortly.");

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

  function startEdit(li, id) {
    const message = store.messageById(id);
    if (!message) return;
    inlineForm(li, {
      label: "Edit message",
      value: message.body,
      submitLabel: "Save",
      onSubmit: (body) => connection.send({ type: "message.edit", id, body }) || notConnected(),
    });
  }

  function deleteMessage(id) {
    if (!window.confirm("Delete this message for everyone?")) return;
    connection.send({ type: "message.delete", id }) || notConnected();
  }

  function startReport(li, id) {
    if (!store.messageById(id)) return;
    inlineForm(li, {
      label: "Why are you reporting this message?",
      value: "",
      submitLabel: "Report",
      onSubmit: (reason) => {
        if (connection.send({ type: "message.report", id, reason })) showError("Thanks — the moderators will look at it.");
        else notConnected();
      },
    });
  }

  /** The actions a user may take on `message` (their own, or as staff). */
  function forMessage(message, own) {
    const actions = el("div", { class: "actions" });
    // The bubble at click time: an edit elsewhere may have re-rendered it since.
    const bubble = (event) => event.target.closest("li");
    actions.append(actionButton("Reply", () => store.setReplyTarget(message.id)));
    if (reactions) actions.append(reactions.addButton(message));
    if (own || config.isStaff) {
      if (own) actions.append(actionButton("Edit", (event) => startEdit(bubble(event), message.id)));
      actions.append(actionButton("Delete", () => deleteMessage(message.id)));
    }
    if (!own) actions.append(actionButton("Report", (event) => startReport(bubble(event), message.id)));
    return actions;
  }

  return { forMessage };
}
