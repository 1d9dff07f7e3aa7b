// People and room settings in the room page's sidebar: the list labelled "Members" (with who is
// online, and Block / Remove actions), adding a member to a private room (the owner's form),
// leaving the room, and renaming or archiving it (owner or staff).
import { errorDetail, memberAdd, request } from "../api.js";
import { actionButton, el } from "../dom.js";

const roomPath = (room) => `/api/rooms/${encodeURIComponent(room)}/`;
const memberPath = (room, username) => `${roomPath(room)}members/${encodeURIComponent(username)}/`;

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

/** The "Members" list: fetched on load (and again on `refresh()`), marked live with who is online. */
export function mountMemberList({ list, note, room, config, store, manages }) {
  let members = [];
  let online = new Set();
  let blocked = new Set();

  function render() {
    list.replaceChildren(...members.map(({ username, role }) => {
      const li = el("li", { "data-username": username }, username);
      if (role === "owner") li.append(" ", el("span", { class: "badge" }, "owner"));
      if (online.has(username)) li.append(" ", el("span", { class: "online-dot", title: "online" }, "● online"));
      if (username !== config.username) {
        const isBlocked = blocked.has(username);
        const block = actionButton(isBlocked ? "Unblock" : "Block", () => setBlocked(username, !isBlocked));
        block.setAttribute("aria-label", `${isBlocked ? "Unblock" : "Block"} ${username}`);
        li.append(" ", block);
        if (manages && role !== "owner" && !config.direct) {
          const remove = actionButton("Remove", () => removeMember(username));
          remove.setAttribute("aria-label", `Remove ${username} from the room`);
          li.append(" ", remove);
        }
      }
      return li;
    }));
  }

  async function refresh() {
    const [result, blocks] = await Promise.all([
      request("GET", `${roomPath(room)}members/`), request("GET", "/api/blocks/"),
    ]);
    if (blocks.ok) blocked = new Set(blocks.data.blocks.map((b) => b.username));
    if (result.ok) {
      members = result.data.members;
      render();
    }
  }

  async function setBlocked(username, block) {
    const result = block
      ? await request("POST", "/api/blocks/", { username })
      : await request("DELETE", `/api/blocks/${encodeURIComponent(username)}/`, {});
    if (!result.ok) {
      note.textContent = errorDetail(result, block ? "Could not block the user." : "Could not unblock the user.");
      return;
    }
    note.textContent = block
      ? `You blocked ${username}: they cannot message you directly any more.`
      : `You unblocked ${username}.`;
    if (block) blocked.add(username);
    else blocked.delete(username);
    render();
  }

  async function removeMember(username) {
    const result = await request("DELETE", memberPath(room, username), {});
    note.textContent = result.ok ? `${username} was removed.` : errorDetail(result, "Could not remove the member.");
    if (result.ok) refresh();
  }

  store?.on("online", (names) => {
    online = new Set(names);
    render();
  });
  refresh();
  return { refresh };
}

/** "Leave room": leaves through the API, then goes home; the API's refusal (the owner) is shown. */
export function mountLeave({ button, note, room, config }) {
  button.addEventListener("click", async () => {
    const result = await request("DELETE", memberPath(room, config.username), {}); // a body: api.js sends the CSRF header with one
    if (result.ok) window.location.href = "/";
    else note.textContent = errorDetail(result, "Could not leave the room.");
  });
}

/** Shows the room's name and whether it is archived (read-only: the composer off), for everyone
 * in the room when a room.updated frame comes. */
export function showRoomState({ heading, archivedNote, composer }) {
  return ({ name, archived }) => {
    heading.firstChild.textContent = name;
    document.title = document.title.replace(/^((?:\(\d+\) )?)[^·]*·/, `$1${name} ·`);
    archivedNote.hidden = !archived;
    for (const control of composer) control.disabled = archived;
  };
}

/** Rename and archive (owner or staff). `apply(room)` shows a change, ours or one a room.updated frame brought. */
export function mountRoomSettings({ form, archiveButton, heading, archivedNote, composer }) {
  const note = form.querySelector(".form-status");
  const room = form.dataset.room;

  const show = showRoomState({ heading, archivedNote, composer });

  function apply(room) {
    show(room);
    archiveButton.textContent = room.archived ? "Unarchive" : "Archive";
    archiveButton.dataset.archived = String(room.archived);
  }

  async function update(body, done) {
    const result = await request("PATCH", roomPath(room), body);
    note.textContent = result.ok ? done : errorDetail(result, "Could not change the room.");
    if (result.ok) apply(result.data);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    if (name) update({ name }, "Renamed.");
  });
  archiveButton.addEventListener("click", () => {
    const archived = archiveButton.dataset.archived !== "true";
    update({ archived }, archived ? "Archived: the room is read-only now." : "The room is open again.");
  });
  return { apply };
}
