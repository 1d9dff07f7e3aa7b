// DOM helpers shared by the views. Text goes in as text, never as HTML.

export const $ = (id) => document.getElementById(id);

/** An element with attributes (non-string values set as properties) and optional text. */
export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

export function actionButton(label, onClick) {
  const button = el("button", { type: "button", class: "link-button" }, label);
  button.addEventListener("click", onClick);
  return button;
}

// A deleted account's messages stay under a stand-in named "deleted-" + 8 hex digits, a name no one
// may sign up with (chat/forms.py); a quote of a message gone with retention has no author at all.
const STAND_IN = /^deleted-[0-9a-f]{8}$/;

/** The name to show for a message's author. */
export function authorName(author) {
  return !author || STAND_IN.test(author.username) ? "deleted user" : author.username;
}
