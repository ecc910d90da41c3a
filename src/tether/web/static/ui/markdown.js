// An agent's reply as formatted text: markdown (marked) made safe (DOMPurify) before it touches the
// page — no scripts, no event handlers, no javascript: links, no images or frames (a remote image
// would tell its server that the message was read). Links open in a new tab without a referrer.
// Code blocks scroll their long lines inside themselves and carry a Copy button.
import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.js";
import { h } from "./dom.js";

const marked = new Marked({ gfm: true, breaks: true, async: false });
const ALLOWED = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "input", "span"],
  ALLOWED_ATTR: ["href", "title", "class", "type", "checked", "disabled", "start", "align"],
  ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i,
  RETURN_DOM_FRAGMENT: true,
};

export function markdown(text) {
  const fragment = DOMPurify.sanitize(marked.parse(text || ""), ALLOWED);
  for (const a of fragment.querySelectorAll("a")) {
    a.target = "_blank";
    a.rel = "noopener noreferrer";
  }
  for (const box of fragment.querySelectorAll("input")) {
    if (box.type !== "checkbox") box.remove();
    else box.disabled = true;
  }
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.textContent;
    const copy = h("button.copy", { type: "button", "aria-label": "Copy the code" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(code);
        copy.textContent = "Copied";
      } catch {
        copy.textContent = "Copy failed";
      }
      setTimeout(() => (copy.textContent = "Copy"), 1500);
    });
    pre.replaceWith(h("div.codeblock", pre.cloneNode(true), copy));
  }
  return fragment;
}
