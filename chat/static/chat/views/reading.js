// Reading comfort in the message list: a separator at each new day ("Today", "Yesterday", or the
// date) and consecutive messages of one author within a few minutes grouped (the author and time
// shown once, still there for screen readers). Recomputed from the DOM after each change, so
// messages arriving out of order, older pages and deletions all come out right.
import { el } from "../dom.js";

const GROUP_MS = 5 * 60 * 1000;

export function formatTime(iso) {
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The local calendar day of `date`, as "YYYY-MM-DD". */
function dayKey(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function dayLabel(date, now) {
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (dayKey(date) === dayKey(now)) return "Today";
  if (dayKey(date) === dayKey(yesterday)) return "Yesterday";
  const options = { weekday: "long", month: "long", day: "numeric" };
  if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return date.toLocaleDateString([], options);
}

/** Keeps `list`'s day separators and grouping right: `schedule()` after a change (once per task,
 * however many messages came), `now()` before measuring the list. */
export function createLayout(list) {
  const dividers = new Map(); // day key -> its separator
  let queued = false;

  function dividerFor(day, date, now) {
    let divider = dividers.get(day);
    if (!divider) {
      divider = el("li", { class: "day-divider", role: "separator" });
      divider.append(el("span"));
      divider.dataset.day = day;
      dividers.set(day, divider);
    }
    const label = dayLabel(date, now);
    if (divider.textContent !== label) {
      divider.firstChild.textContent = label;
      divider.setAttribute("aria-label", label);
    }
    return divider;
  }

  function now() {
    queued = false;
    const today = new Date();
    const messages = [...list.querySelectorAll("li.message")];
    // Separators of days no message is on any more go first: one left between two messages would
    // keep them from grouping.
    const days = new Set(messages.filter((li) => li.dataset.at).map((li) => dayKey(new Date(li.dataset.at))));
    for (const [day, divider] of dividers) {
      if (!days.has(day)) {
        divider.remove();
        dividers.delete(day);
      }
    }
    const seen = new Set();
    let prev = null;
    let prevAt = null;
    for (const li of messages) {
      const at = li.dataset.at ? new Date(li.dataset.at) : null; // our unsent bubbles have no time yet
      if (!at || Number.isNaN(at.getTime())) {
        li.classList.remove("continued");
        prev = null;
        continue;
      }
      const day = dayKey(at);
      if (!seen.has(day)) {
        seen.add(day);
        const divider = dividerFor(day, at, today);
        // The day comes first, then a "New messages" divider that stands right above the message.
        const above = li.previousElementSibling;
        const before = above?.classList.contains("new-divider") ? above : li;
        if (divider.nextElementSibling !== before) before.before(divider);
      }
      const continued = prev !== null && li.previousElementSibling === prev && prev.dataset.author === li.dataset.author
        && at - prevAt >= 0 && at - prevAt <= GROUP_MS;
      li.classList.toggle("continued", continued);
      prev = li;
      prevAt = at;
    }
  }

  function schedule() {
    if (queued) return;
    queued = true;
    queueMicrotask(() => {
      if (queued) now();
    });
  }

  return { now, schedule };
}
