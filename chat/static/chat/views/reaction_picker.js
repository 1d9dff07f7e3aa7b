// The emoji picker that a message's "Add reaction" button opens: a menu of common emoji beside the
// button; arrows (and Home/End) move, Enter or a click picks, Escape or a click elsewhere closes and
// gives the focus back to the button.
import { el } from "../dom.js";

export const COMMON_EMOJI = [
  ["👍", "Thumbs up"], ["❤️", "Heart"], ["😂", "Laughing"], ["🎉", "Party"], ["😮", "Surprised"],
  ["😢", "Sad"], ["👀", "Eyes"], ["✅", "Done"], ["🙏", "Thanks"], ["🔥", "Fire"],
];

/** One picker for the page; `open(button, messageId)` shows it, `onPick(messageId, emoji)` acts. */
export function mountReactionPicker({ onPick }) {
  const menu = el("div", { class: "reaction-picker", role: "menu", "aria-label": "Reactions", hidden: true });
  const items = COMMON_EMOJI.map(([emoji, name]) => {
    const item = el("button", { type: "button", role: "menuitem", tabindex: "-1", "aria-label": `${emoji} ${name}`, title: name },
      emoji);
    item.addEventListener("click", () => {
      const target = messageId;
      close();
      onPick(target, emoji);
    });
    return item;
  });
  menu.append(...items);
  document.body.append(menu);
  let opener = null;
  let messageId = null;

  function close({ restoreFocus = true } = {}) {
    if (menu.hidden) return;
    menu.hidden = true;
    opener?.setAttribute("aria-expanded", "false");
    if (restoreFocus && opener?.isConnected) opener.focus();
    opener = null;
  }

  function open(button, id) {
    if (opener === button) return close();
    close({ restoreFocus: false });
    opener = button;
    messageId = id;
    button.setAttribute("aria-expanded", "true");
    menu.hidden = false;
    // Beside the button, inside the window (fixed: the list scrolling closes it anyway).
    const at = button.getBoundingClientRect();
    const box = menu.getBoundingClientRect();
    const below = at.bottom + 4 + box.height <= window.innerHeight;
    menu.style.top = `${below ? at.bottom + 4 : Math.max(4, at.top - box.height - 4)}px`;
    menu.style.left = `${Math.max(4, Math.min(at.right - box.width, window.innerWidth - box.width - 4))}px`;
    items[0].focus();
  }

  menu.addEventListener("keydown", (event) => {
    const at = items.indexOf(document.activeElement);
    const moves = { ArrowRight: at + 1, ArrowDown: at + 5, ArrowLeft: at - 1, ArrowUp: at - 5, Home: 0, End: items.length - 1 };
    if (event.key in moves) {
      event.preventDefault();
      items[(moves[event.key] + items.length) % items.length].focus();
    } else if (event.key === "Escape") {
      event.preventDefault();
      close();
    } else if (event.key === "Tab") {
      close(); // back on the button first: Tab then goes on from there
    }
  });
  document.addEventListener("pointerdown", (event) => {
    if (!menu.contains(event.target) && event.target !== opener) close({ restoreFocus: false });
  });
  window.addEventListener("resize", () => close({ restoreFocus: false }));

  return { open, close };
}
