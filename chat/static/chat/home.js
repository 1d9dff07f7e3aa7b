// The home page: the room list's times in local time, creating a room, searching messages, and the
// sidebar, live over the user socket (/ws/user/).
import { toLogin } from "./api.js";
import { Connection } from "./connection.js";
import { $ } from "./dom.js";
import { startSidebar } from "./views/sidebar.js";
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

if ($("conversations")) {
  const connection = new Connection({ path: "/ws/user/", readyType: "sidebar.hello" });
  connection.onState((next) => {
    if (next.code === 4401) toLogin();
  });
  startSidebar({ nav: $("conversations"), connection });
  connection.start();
}
