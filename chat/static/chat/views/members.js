// Adding a member to a private room (the owner's form in the sidebar).
import { errorDetail, memberAdd } from "../api.js";

export function mountMembers({ form, room }) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const note = form.querySelector(".form-status");
    const username = form.elements.username.value.trim();
    if (!username) return;
    const result = await memberAdd(room, username);
    note.textContent = result.ok ? `${username} is now a member.` : errorDetail(result, "Could not add the member.");
    if (result.ok) form.reset();
  });
}
