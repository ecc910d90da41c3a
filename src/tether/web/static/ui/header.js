// The top bar: title, back link, and the connection state — always visible.
import { errorText, h, timeAgo, withCode } from "./dom.js";

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

// "2 min ago", and "less than a minute ago" rather than "just now": it was said, not seen.
function reportedAgo(ts) {
  return Date.now() / 1000 - ts < 60 ? "less than a minute ago" : timeAgo(ts);
}

// While the relay says the host is away, what the screens show is what it left at the relay for
// this browser (HostModel.away), and this says so, with its age.
export function awayBanner(host, model, conn) {
  const away = model?.away;
  if (!host || conn.state === "connected" || !(conn.away || away?.state === "shown")) return null;
  let said;
  if (away?.state === "shown") said = `${host.name} is offline · showing what it reported ${reportedAgo(away.snapshot.taken_at)}`;
  else if (away?.state === "none") said = `${host.name} is offline · it left nothing at the relay for this browser`;
  else if (away?.state === "failed") said = `${host.name} is offline · what it left at the relay cannot be shown: ${errorText(away.error)}`;
  else said = `${host.name} is offline · reading what it left at the relay…`;
  return h(
    "p.banner.away",
    { id: "away-banner", role: "status", dataset: { state: away?.state || "reading", takenAt: away?.snapshot?.taken_at ?? "" } },
    ...withCode(said),
  );
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
