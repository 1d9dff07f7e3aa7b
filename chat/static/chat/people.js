// The room page's people and room settings (views/members.js), beside the page's entry module
// (room.js, which exposes the room's store as window.chat).
import { $ } from "./dom.js";
import { mountLeave, mountMemberList, mountRoomSettings, showRoomState } from "./views/members.js";

const config = JSON.parse($("chat-config").textContent);
const note = $("people-status");
const manages = Boolean($("room-settings"));
const memberList = mountMemberList({ list: $("members"), note, room: config.room, config, store: window.chat, manages });
// room.js mounts the owner's add-member form; its status line changing means an answer came.
const added = $("add-member")?.querySelector(".form-status");
if (added) new MutationObserver(() => memberList.refresh()).observe(added, { childList: true, characterData: true });
if ($("leave-room")) mountLeave({ button: $("leave-room"), note, room: config.room, config });
const shown = { heading: $("room-name"), archivedNote: $("archived-note"), composer: [$("message-input"), $("send"), $("attach-file")] };
// A rename or archive by the owner or staff reaches every socket of the room as room.updated.
const showRoom = manages
  ? mountRoomSettings({ form: $("room-settings"), archiveButton: $("room-archive"), ...shown }).apply
  : showRoomState(shown);
window.chat.on("room.updated", showRoom);
