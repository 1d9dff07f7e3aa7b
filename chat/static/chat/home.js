// The home page: the room list's times in local time, creating a room, searching messages.
import { $ } from "./dom.js";
import { mountRoomForm } from "./views/room_form.js";
import { mountSearch } from "./views/search.js";

for (const time of document.querySelectorAll("time[datetime]")) {
  const when = new Date(time.dateTime);
  if (!Number.isNaN(when.getTime())) {
    time.textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }
}

if ($("create-room")) mountRoomForm($("create-room"));
if ($("search")) mountSearch({ form: $("search"), results: $("search-results"), status: $("search-status") });
