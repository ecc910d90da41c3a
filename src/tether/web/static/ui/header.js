// The top bar: title, back link, and the connection state — always visible.
import { h } from "./dom.js";

const LABELS = {
  connected: "connected",
  connecting: "connecting…",
  offline: "offline",
  failed: "refused",
};

export function header({ title, back = null, state = null, detail = "" }) {
  return h(
    "header.bar",
    back ? h("a.back", { href: back, "aria-label": "Back" }, "‹") : h("img.logo", { src: "icon.svg", alt: "" }),
    h("h1.title", title),
    state
      ? h(
          "span.conn",
          { id: "conn-state", dataset: { state }, title: detail || LABELS[state] || state },
          h("span.dot"),
          LABELS[state] || state,
        )
      : null,
  );
}

export function stateNote(state, detail) {
  if (!detail || state === "connected") return null;
  return h("p.note", { id: "conn-detail", dataset: { state } }, detail);
}
