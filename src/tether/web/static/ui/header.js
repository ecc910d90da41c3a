// The top bar: title, back link, and the connection state — always visible.
import { h, withCode } from "./dom.js";

const LABELS = {
  connected: "connected",
  connecting: "connecting…",
  offline: "offline",
  failed: "refused",
  revoked: "revoked",
};

export function header({ title, back = null, state = null, detail = "", actions = null }) {
  return h(
    "header.bar",
    back ? h("a.back", { href: back, "aria-label": "Back" }, "‹") : h("img.logo", { src: "icon.svg", alt: "" }),
    h("h1.title", title),
    state
      ? h(
          "span.conn",
          { id: "conn-state", dataset: { state }, title: detail || LABELS[state] || state, role: "status", "aria-live": "polite" },
          h("span.dot", { "aria-hidden": "true" }),
          LABELS[state] || state,
        )
      : null,
    actions,
  );
}

export function stateNote(state, detail) {
  if (!detail || state === "connected" || state === "revoked") return null;
  return h("p.note", { id: "conn-detail", dataset: { state } }, ...withCode(detail));
}

// What a revoked device sees instead of a screen it can no longer use: no retry button (nothing
// this page could do helps), only the way out. A *linked* host (started by another host with
// `tether ssh`) knows this browser only through that host's devices, so its refusal may also mean
// it has not received this browser yet: it says so, and offers to try again.
export function revokedPanel(host, { tether }) {
  const forget = h(
    "button.danger",
    {
      id: "forget-host",
      type: "button",
      onclick: async () => {
        await tether.forget(host.host_id);
        window.location.hash = "#/";
      },
    },
    "Forget this host",
  );
  const detail = host.revoked?.detail ? h("p.hint", { id: "revoked-detail" }, host.revoked.detail) : null;
  if (host.linked) {
    const via = tether.viaName(host);
    return h(
      "section.screen.revoked",
      { id: "revoked", dataset: { linked: "1" } },
      h("h2.revoked-title", "This browser is refused"),
      h(
        "p",
        h("strong", host.name),
        " (linked via ",
        h("strong", via),
        ") does not accept this browser. It accepts the devices ",
        via,
        " hands it: this browser was revoked on ",
        via,
        ", or ",
        host.name,
        " has not received it yet.",
      ),
      h("p.hint", ...withCode(`If this browser still works with ${via}, run \`tether ssh refresh ${host.name}\` on ${via}, then try again.`)),
      detail,
      h(
        "div.actions",
        h(
          "button",
          {
            id: "retry-host",
            type: "button",
            onclick: async () => {
              await tether.retryRefused(host.host_id);
              // Draw the screen afresh (it showed only this panel).
              window.dispatchEvent(new HashChangeEvent("hashchange"));
            },
          },
          "Try again",
        ),
        forget,
      ),
    );
  }
  return h(
    "section.screen.revoked",
    { id: "revoked" },
    h("h2.revoked-title", "This browser was revoked"),
    h(
      "p",
      h("strong", host.name),
      " no longer accepts this browser: it was revoked (or removed) on the host. Nothing here can reconnect it.",
    ),
    h("p.hint", ...withCode("To use this host again, run `tether pair` on it and open the new link here.")),
    detail,
    forget,
  );
}
