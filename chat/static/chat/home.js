// The room list: local times, and creating a room through the JSON API.
const csrfToken = () => document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] ?? "";

for (const time of document.querySelectorAll("time[datetime]")) {
  const when = new Date(time.dateTime);
  if (!Number.isNaN(when.getTime())) {
    time.textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }
}

const form = document.getElementById("create-room");
form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = form.querySelector(".error");
  error.hidden = true;
  const name = form.elements.name.value.trim();
  if (!name) return;
  try {
    const response = await fetch("/api/rooms/", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ name, private: form.elements.private.checked }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error?.detail ?? `The server answered ${response.status}.`);
    window.location.href = `/rooms/${data.slug}/`;
  } catch (err) {
    error.textContent = `Could not create the room: ${err.message}`;
    error.hidden = false;
  }
});

// Search: results link into the room at the message (?at=<seq>), shown in context.
const search = document.getElementById("search");
const results = document.getElementById("search-results");
const searchStatus = document.getElementById("search-status");
search?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = search.elements.q.value.trim();
  if (!q) return;
  searchStatus.textContent = "Searching…";
  try {
    const response = await fetch(`/api/search/?${new URLSearchParams({ q, limit: "30" })}`);
    const data = await response.json();
    if (!response.ok) throw new Error(data.error?.detail ?? `The server answered ${response.status}.`);
    results.replaceChildren(...data.messages.map((message) => {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = `/rooms/${encodeURIComponent(message.room)}/?at=${message.seq}`;
      link.textContent = message.body.length > 140 ? `${message.body.slice(0, 139)}…` : message.body;
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = ` — ${message.author.username} in ${message.room}, ${new Date(message.created_at).toLocaleString()}`;
      li.append(link, meta);
      return li;
    }));
    searchStatus.textContent = data.messages.length ? `${data.messages.length} found.` : "Nothing found.";
  } catch (err) {
    searchStatus.textContent = `Search failed: ${err.message}`;
  }
});
