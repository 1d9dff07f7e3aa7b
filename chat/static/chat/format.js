// A message body, as the author wrote it, turned into safe DOM: a small Markdown subset
// (markdown-it, HTML in a body stays text), sanitized by DOMPurify with an allow-list of what that
// subset produces, links that open apart and leak nothing, and @mentions marked. No DOM from a body
// ever reaches the page without going through here. The stored body is never changed.
import markdownit from "./vendor/markdown-it.esm.min.mjs";
import createDOMPurify from "./vendor/purify.es.mjs";

// The mention rule, the server's (chat/protocol.py MENTION_RE, docs/protocol.md "Formatting"): `@`
// not preceded by a username character (so "mail@example.com" names nobody), then a Django
// username ([\w.@+-], Unicode \w) not ending in "." or "@" (so "thanks @bob." names "bob").
// JavaScript's \w is ASCII-only, hence the Unicode classes.
const WORD = "\\p{L}\\p{N}_";
export const MENTION = new RegExp(`(?<![${WORD}.@+-])@([${WORD}.@+-]*[${WORD}+-])`, "gu");

/** The usernames a body mentions, each once, in order. */
export function mentionedNames(body) {
  return [...new Set([...body.matchAll(MENTION)].map((match) => match[1]))];
}

// "zero" enables nothing; we switch on only the subset we support (no headings, images, tables,
// rules, reference definitions or raw HTML).
const md = markdownit("zero", { html: false, linkify: true, breaks: true })
  .enable(["emphasis", "backticks", "escape", "entity", "newline", "fence", "code", "blockquote", "list",
    "link", "autolink", "linkify"]);

const ALLOWED_TAGS = ["p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a"];
const ALLOWED_ATTR = ["href", "start"];
const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

// An instance of our own: its hooks never touch another user of the library.
const purify = createDOMPurify(window);
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName !== "A") return;
  let url = null;
  try {
    url = new URL(node.getAttribute("href") ?? ""); // no base: relative links are not allowed either
  } catch {
    url = null;
  }
  if (!url || !LINK_PROTOCOLS.has(url.protocol)) {
    node.removeAttribute("href"); // renderBody then keeps its text as plain text
    return;
  }
  node.setAttribute("rel", "noopener noreferrer nofollow");
  node.setAttribute("target", "_blank");
});

const SKIP_MENTIONS = new Set(["CODE", "PRE", "A"]);
const HAS_MENTION = new RegExp(MENTION.source, "u"); // no `g`: test() keeps no lastIndex state

/** Wraps each @mention in `root`'s text (outside code and links) in <span class="mention">. */
function markMentions(root, username) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let up = node.parentNode; up && up !== root; up = up.parentNode) {
        if (SKIP_MENTIONS.has(up.nodeName)) return NodeFilter.FILTER_REJECT;
      }
      return HAS_MENTION.test(node.data) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT;
    },
  });
  const texts = [];
  while (walker.nextNode()) texts.push(walker.currentNode);
  for (const text of texts) {
    const parts = [];
    let from = 0;
    for (const match of text.data.matchAll(MENTION)) {
      parts.push(text.data.slice(from, match.index));
      const span = document.createElement("span");
      span.className = match[1] === username ? "mention me" : "mention";
      span.textContent = match[0];
      parts.push(span);
      from = match.index + match[0].length;
    }
    parts.push(text.data.slice(from));
    text.replaceWith(...parts.filter((part) => part !== ""));
  }
}

/** The body rendered for display: a DocumentFragment (safe to append). `username` is the reader's
 * own name, whose mentions stand out more. */
export function renderBody(body, username) {
  // markdown-it ends every block with a newline: trimmed, the text of a one-line body is the body.
  const html = md.render(body).trim();
  const fragment = purify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR, RETURN_DOM_FRAGMENT: true });
  for (const link of fragment.querySelectorAll("a:not([href])")) link.replaceWith(...link.childNodes);
  markMentions(fragment, username);
  return fragment;
}
