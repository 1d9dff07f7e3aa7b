// A message's files: images as thumbnails that open the full image in a dialog, other files as a
// download card (name, size, type). Names are text; URLs are the app's own paths only.
import { el } from "../dom.js";

/** "18 KB", "2.4 MB": a size for people. */
export function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let size = bytes / 1024;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size < 10 ? size.toFixed(1) : Math.round(size)} ${units[unit]}`;
}

function typeLabel(type) {
  const known = [[/pdf/, "PDF"], [/zip/, "ZIP archive"], [/^text\/plain/, "Text"], [/sheet|excel/, "Spreadsheet"],
    [/presentation|powerpoint/, "Presentation"], [/word|document/, "Document"], [/^image\//, "Image"]];
  return known.find(([pattern]) => pattern.test(type))?.[1] ?? type;
}

/** Same-origin paths only: a URL from a message never becomes a javascript: or foreign link. */
function appPath(url) {
  try {
    const parsed = new URL(url, location.origin);
    return parsed.origin === location.origin ? parsed.pathname + parsed.search : null;
  } catch {
    return null;
  }
}

export function mountAttachments({ list, store }) {
  let viewer = null;

  function showImage(url, name) {
    if (!viewer) {
      viewer = el("dialog", { class: "image-viewer" });
      const close = el("button", { type: "button", class: "image-viewer-close", "aria-label": "Close image" }, "×");
      close.addEventListener("click", () => viewer.close());
      viewer.addEventListener("click", (event) => {
        if (event.target === viewer) viewer.close(); // the backdrop
      });
      viewer.append(close, el("img", { alt: "" }), el("a", { target: "_blank", rel: "noopener" }, "Open in a new tab"));
      document.body.append(viewer);
    }
    viewer.setAttribute("aria-label", name);
    Object.assign(viewer.querySelector("img"), { src: url, alt: name });
    viewer.querySelector("a").href = url;
    viewer.showModal();
  }

  function image(file, url, thumb) {
    const link = el("a", { href: url, class: "attachment-image", title: `${file.name} (${humanSize(file.size)})` });
    link.append(el("img", { src: thumb, alt: file.name, loading: "lazy", decoding: "async" }));
    link.addEventListener("click", (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return; // a new tab as asked
      event.preventDefault();
      showImage(url, file.name);
    });
    return link;
  }

  function card(file, url) {
    const link = el("a", { href: url, class: "attachment-file", download: file.name });
    link.append(el("span", { class: "attachment-name" }, file.name),
      el("span", { class: "attachment-meta" }, `${humanSize(file.size)} · ${typeLabel(file.content_type)}`));
    return link;
  }

  /** The files under a message's body (an empty box, hidden by CSS, when it has none). */
  function render(message) {
    const box = el("div", { class: "attachments" });
    for (const file of message.attachments ?? []) {
      const url = appPath(file.url);
      const thumb = file.thumbnail_url && appPath(file.thumbnail_url);
      if (url) box.append(thumb ? image(file, url, thumb) : card(file, url));
    }
    return box;
  }

  store.on("message.attachments", (message) => {
    list.querySelector(`li.message[data-seq="${message.seq}"] .attachments`)?.replaceWith(render(message));
  });

  return { render };
}
