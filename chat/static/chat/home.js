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
