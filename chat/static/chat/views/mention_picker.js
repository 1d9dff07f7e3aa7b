// The composer's @mention autocomplete: typing `@` and the start of a name lists the room's members
// that match (a listbox the textbox points into with aria-activedescendant, focus staying in the
// textbox); arrows move, Enter or Tab or a click picks, Escape closes.
import { request } from "../api.js";
import { el } from "../dom.js";

const SHOWN = 8;
const REFRESH_MS = 10000;
// The `@name` being typed right before the caret, by the mention rule of format.js (whose start
// it is: the name may still be empty or end in "." while typed).
const TYPED = /(?<![\p{L}\p{N}_.@+-])@([\p{L}\p{N}_.@+-]*)$/u;

export function mountMentionPicker({ input, room, username, store }) {
  const members = new Set();
  let fetchedAt = 0;
  let open = false;
  let options = [];
  let active = 0;
  let token = null; // {start, query}: the `@query` the list is for
  let dismissed = null; // the start of a token closed with Escape: not reopened while it is typed

  const list = el("ul", { id: "mention-list", class: "mention-list", role: "listbox", "aria-label": "People to mention",
    hidden: true });
  input.after(list);
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", list.id);

  /** The room's members (GET .../members/), at most every REFRESH_MS: a presence change may be
   * someone new. Online users and authors shown count too, should the request fail. */
  async function refresh() {
    if (Date.now() - fetchedAt < REFRESH_MS) return;
    fetchedAt = Date.now();
    try {
      const result = await request("GET", `/api/rooms/${encodeURIComponent(room)}/members/`);
      for (const member of result.ok ? result.data.members ?? [] : []) {
        members.add(typeof member === "string" ? member : member.username);
      }
    } catch {
      // the other sources stand in
    }
  }

  function candidates(query) {
    const names = new Set([...members, ...store.online]);
    for (const message of store.messages.values()) names.add(message.author.username);
    names.delete(username);
    const q = query.toLowerCase();
    const sorted = [...names].sort((a, b) => a.localeCompare(b));
    const starts = sorted.filter((name) => name.toLowerCase().startsWith(q));
    const contains = sorted.filter((name) => !name.toLowerCase().startsWith(q) && name.toLowerCase().includes(q));
    return [...starts, ...contains].slice(0, SHOWN);
  }

  function close() {
    open = false;
    token = null;
    list.hidden = true;
    list.replaceChildren();
    input.removeAttribute("aria-activedescendant");
  }

  function highlight(index) {
    active = (index + options.length) % options.length;
    list.querySelectorAll("[role=option]").forEach((option, i) => option.setAttribute("aria-selected", String(i === active)));
    const current = list.children[active];
    input.setAttribute("aria-activedescendant", current.id);
    current.scrollIntoView({ block: "nearest" });
  }

  function show(found) {
    options = found;
    list.replaceChildren(...found.map((name, i) => {
      const option = el("li", { id: `mention-option-${i}`, role: "option", "aria-selected": "false" }, name);
      // mousedown, not click: the textbox keeps the focus (and the caret) while the user picks.
      option.addEventListener("mousedown", (event) => {
        event.preventDefault();
        pick(i);
      });
      return option;
    }));
    open = true;
    list.hidden = false;
    highlight(0);
  }

  function update() {
    const caret = input.selectionStart;
    const match = input.selectionEnd === caret ? TYPED.exec(input.value.slice(0, caret)) : null;
    if (!match) {
      dismissed = null;
      close();
      return;
    }
    const start = caret - match[0].length;
    if (start === dismissed) return;
    const found = candidates(match[1]);
    if (!found.length) {
      close();
      return;
    }
    token = { start, query: match[1] };
    show(found);
  }

  function pick(index) {
    if (!token) return;
    const name = options[index];
    const end = token.start + 1 + token.query.length;
    input.value = `${input.value.slice(0, token.start)}@${name} ${input.value.slice(end)}`;
    const caret = token.start + name.length + 2;
    input.setSelectionRange(caret, caret);
    close();
    input.dispatchEvent(new Event("input", { bubbles: true })); // the counter and typing notice follow
  }

  /** The composer's keydown goes here first; true when the picker used the key. */
  function handleKey(event) {
    if (!open || event.isComposing) return false;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") highlight(active + (event.key === "ArrowDown" ? 1 : -1));
    else if (event.key === "Enter" || event.key === "Tab") pick(active);
    else if (event.key === "Escape") {
      dismissed = token.start;
      close();
    } else return false;
    event.preventDefault();
    return true;
  }

  input.addEventListener("input", update);
  input.addEventListener("click", update);
  input.addEventListener("blur", close);
  input.addEventListener("focus", refresh);
  store.on("online", refresh);
  refresh();

  return { handleKey };
}
