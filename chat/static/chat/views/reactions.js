// Reactions under a message: one toggle button per emoji (pressed when the reader reacted; a click
// adds or removes the reader's own), the "Add reaction" picker (views/reaction_picker.js), and
// live updates from `reaction` frames (the store keeps the list; this only shows it).
import { el } from "../dom.js";
import { mountReactionPicker } from "./reaction_picker.js";

function names(users, count) {
  const shown = users.slice(0, 5);
  const others = count - shown.length;
  if (others > 0) shown.push(others === 1 ? "1 other" : `${others} others`);
  return shown.length > 1 ? `${shown.slice(0, -1).join(", ")} and ${shown.at(-1)}` : shown.join("");
}

export function mountReactions({ list, store, connection, config, showError }) {
  function react(id, emoji, add) {
    const sent = connection.send({ type: add ? "reaction.add" : "reaction.remove", id, emoji });
    if (!sent) showError("Not connected; try again shortly.");
  }

  const picker = mountReactionPicker({
    onPick: (id, emoji) => {
      const mine = store.messageById(id)?.reactions?.find((r) => r.emoji === emoji)?.users.includes(config.username);
      if (!mine) react(id, emoji, true); // picking one already ours keeps it
    },
  });

  function chip(message, { emoji, count, users }) {
    const mine = users.includes(config.username);
    const label = `${emoji} ${count} ${count === 1 ? "reaction" : "reactions"}${users.length ? `, by ${names(users, count)}` : ""}`
      + ` — click to ${mine ? "remove yours" : "add yours"}`;
    const button = el("button", { type: "button", class: "reaction", "aria-pressed": String(mine), "aria-label": label,
      title: label });
    button.append(el("span", { class: "reaction-emoji" }, emoji), el("span", { class: "reaction-count" }, String(count)));
    button.addEventListener("click", () => react(message.id, emoji, !mine));
    return button;
  }

  /** The row under a message's body (empty, and hidden by CSS, while nobody reacted). */
  function row(message) {
    const box = el("div", { class: "reactions", role: "group", "aria-label": "Reactions" });
    for (const reaction of message.reactions ?? []) if (reaction.count > 0) box.append(chip(message, reaction));
    return box;
  }

  /** The "Add reaction" button of a message's actions. */
  function addButton(message) {
    const button = el("button", { type: "button", class: "link-button add-reaction", "aria-label": "Add reaction",
      title: "Add reaction", "aria-haspopup": "menu", "aria-expanded": "false" }, "☺+");
    button.addEventListener("click", () => picker.open(button, message.id));
    return button;
  }

  store.on("message.reactions", (message) => {
    const li = list.querySelector(`li.message[data-seq="${message.seq}"]`);
    const old = li?.querySelector(".reactions");
    if (!old) return;
    const focused = old.contains(document.activeElement) ? document.activeElement.querySelector(".reaction-emoji")?.textContent : null;
    const fresh = row(message);
    old.replaceWith(fresh);
    // The reader's own click re-renders the row: keep the focus on the same emoji.
    if (focused) [...fresh.children].find((b) => b.querySelector(".reaction-emoji").textContent === focused)?.focus();
  });
  list.addEventListener("scroll", () => picker.close({ restoreFocus: false }));

  return { row, addButton };
}
