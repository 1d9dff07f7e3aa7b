// Message search (home page): results link into the room at the message (?at=<seq>), shown in context.
import { errorDetail, messageSearch } from "../api.js";
import { authorName, el } from "../dom.js";

const LIMIT = 30;
const EXCERPT = 140;

function resultItem(message) {
  const body = message.body.length > EXCERPT ? `${message.body.slice(0, EXCERPT - 1)}…` : message.body;
  const link = el("a", { href: `/rooms/${encodeURIComponent(message.room)}/?at=${message.seq}` }, body);
  const when = new Date(message.created_at).toLocaleString();
  const meta = el("span", { class: "meta" }, ` — ${authorName(message.author)} in ${message.room}, ${when}`);
  const li = el("li");
  li.append(link, meta);
  return li;
}

export function mountSearch({ form, results, status }) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = form.elements.q.value.trim();
    if (!q) return;
    status.textContent = "Searching…";
    try {
      const result = await messageSearch(q, LIMIT);
      if (!result.ok) throw new Error(errorDetail(result, `The server answered ${result.status}.`));
      const { messages } = result.data;
      results.replaceChildren(...messages.map(resultItem));
      status.textContent = messages.length ? `${messages.length} found.` : "Nothing found.";
    } catch (err) {
      status.textContent = `Search failed: ${err.message}`;
    }
  });
}
