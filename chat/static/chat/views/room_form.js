// Creating a room (home page): through the JSON API, then into the new room.
import { errorDetail, roomCreate } from "../api.js";

export function mountRoomForm(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = form.querySelector(".error");
    error.hidden = true;
    const name = form.elements.name.value.trim();
    if (!name) return;
    try {
      const result = await roomCreate(name, form.elements.private.checked);
      if (!result.ok) throw new Error(errorDetail(result, `The server answered ${result.status}.`));
      window.location.href = `/rooms/${result.data.slug}/`;
    } catch (err) {
      error.textContent = `Could not create the room: ${err.message}`;
      error.hidden = false;
    }
  });
}
