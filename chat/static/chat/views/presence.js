// Who is here: the list labelled "Online" (with a direct-message button for each other user)
// and the line saying who is typing.
import { directOpen, errorDetail } from "../api.js";
import { actionButton, el } from "../dom.js";

export function mountPresence({ onlineList, typingLine, store, config, showError }) {
  async function openDirect(username) {
    const result = await directOpen(username);
    if (result.ok) window.location.href = `/rooms/${result.data.slug}/`;
    else showError(errorDetail(result, "Could not open a direct conversation."));
  }

  store.on("online", (names) => {
    onlineList.replaceChildren(...names.map((name) => {
      const li = el("li", {}, name);
      if (name !== config.username && !config.direct) {
        const button = actionButton("Message", () => openDirect(name));
        button.setAttribute("aria-label", `Message ${name} directly`);
        li.append(" ", button);
      }
      return li;
    }));
  });

  store.on("typing", (names) => {
    if (names.length === 0) typingLine.textContent = "";
    else if (names.length === 1) typingLine.textContent = `${names[0]} is typing…`;
    else if (names.length <= 3) typingLine.textContent = `${names.join(", ")} are typing…`;
    else typingLine.textContent = "Several people are typing…";
  });
}
