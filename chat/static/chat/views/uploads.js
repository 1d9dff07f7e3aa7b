// The composer's files: the "Attach file" button, files dropped on the messages or the composer,
// and pasted files (screenshots). Each uploads at once, its chip showing the progress, a remove
// button and the server's reason if it refuses the file; a send carries the uploaded ids and the
// chips go once the server acked that message.
import { uploadAttachment } from "../api.js";
import { el } from "../dom.js";
import { humanSize } from "./attachments.js";

const MAX_FILES = 10; // attachments one message may carry (chat/protocol.py MAX_ATTACHMENTS)
const REFUSED = {
  413: "This file is too big.",
  415: "This type of file is not allowed.",
  429: "Too many uploads right now; wait a moment and try again.",
  404: "Files cannot be sent to this room.",
};

export function mountUploads({ box, button, picker, input, dropZones, room, store, showError }) {
  const uploads = []; // {file, status: "uploading" | "done" | "failed", attachment?, clientId?, abort?, chip}
  const waiting = () => uploads.filter((upload) => !upload.clientId && upload.status !== "failed");

  function remove(upload) {
    upload.abort?.();
    uploads.splice(uploads.indexOf(upload), 1);
    upload.chip.remove();
    box.hidden = uploads.length === 0;
  }

  function chipFor(upload) {
    const { name, size } = upload.file;
    const chip = el("div", { class: "upload", role: "group", "aria-label": name });
    chip.dataset.state = upload.status;
    const bar = el("div", { class: "upload-progress", role: "progressbar", "aria-label": `Uploading ${name}`,
      "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" });
    bar.append(el("span"));
    const close = el("button", { type: "button", class: "link-button upload-remove", "aria-label": `Remove ${name}`, title: "Remove" }, "×");
    close.addEventListener("click", () => {
      remove(upload);
      input.focus();
    });
    chip.append(el("span", { class: "upload-name" }, name), el("span", { class: "upload-size" }, humanSize(size)), bar,
      close, el("span", { class: "upload-error", hidden: true }));
    return chip;
  }

  async function start(file) {
    const upload = { file, status: "uploading" };
    upload.chip = chipFor(upload);
    uploads.push(upload);
    box.append(upload.chip);
    box.hidden = false;
    const bar = upload.chip.querySelector("[role=progressbar]");
    const { done, abort } = uploadAttachment(room, file, (fraction) => {
      const percent = Math.round(fraction * 100);
      bar.setAttribute("aria-valuenow", String(percent));
      bar.firstChild.style.width = `${percent}%`;
    });
    upload.abort = abort;
    const result = await done;
    upload.abort = null;
    if (result.aborted) return;
    bar.remove();
    if (result.ok) {
      upload.status = "done";
      upload.attachment = result.data;
    } else {
      upload.status = "failed";
      const error = upload.chip.querySelector(".upload-error");
      error.textContent = result.data.error?.detail ?? REFUSED[result.status]
        ?? (result.status ? `The upload failed (${result.status}).` : "The upload failed: no connection.");
      error.setAttribute("role", "alert");
      error.hidden = false;
    }
    upload.chip.dataset.state = upload.status;
  }

  function add(files) {
    if (button.disabled) return; // muted, banned or archived: no sends, so no uploads either
    for (const file of files) {
      if (waiting().length >= MAX_FILES) {
        showError(`A message takes at most ${MAX_FILES} files.`);
        return;
      }
      start(file);
    }
  }

  button.addEventListener("click", () => picker.click());
  picker.addEventListener("change", () => {
    add([...picker.files]);
    picker.value = ""; // the same file may be picked again
  });
  input.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (!files.length) return;
    event.preventDefault();
    add(files);
  });
  for (const zone of dropZones) {
    zone.addEventListener("dragover", (event) => {
      if (!event.dataTransfer?.types.includes("Files")) return;
      event.preventDefault();
      zone.classList.add("drop-target");
    });
    zone.addEventListener("dragleave", (event) => {
      if (!zone.contains(event.relatedTarget)) zone.classList.remove("drop-target");
    });
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("drop-target");
      if (!event.dataTransfer?.files.length) return;
      event.preventDefault();
      add([...event.dataTransfer.files]);
    });
  }
  // A file dropped beside the zones must not replace the page with itself.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (event.dataTransfer?.types.includes("Files")) event.preventDefault();
    });
  }
  store.on("pending.changed", (entry) => {
    if (entry.status !== "sent") return;
    for (const upload of uploads.filter((u) => u.clientId === entry.clientId)) remove(upload);
  });

  // The composer's draft part: the uploaded ids a send carries, marked as sent with that message.
  return {
    collect() {
      const ready = waiting();
      if (ready.some((upload) => upload.status === "uploading")) return { error: "Wait until the files are uploaded." };
      return { fields: ready.length ? { attachments: ready.map((upload) => upload.attachment.id) } : {} };
    },
    sent(clientId) {
      for (const upload of waiting()) {
        upload.clientId = clientId;
        upload.chip.dataset.state = "sending";
      }
    },
  };
}
