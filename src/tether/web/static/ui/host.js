// One host: its sessions (sessions.list, kept live by the host-wide subscription), waiting for a
// person first; links to start a session, to the devices (admin) and to this host's settings.
// While the host is away: the sessions it left at the relay for this browser, said to be that.
import { h, morph, replace, throttled, timeAgo, withCode } from "./dom.js";
import { awayBanner, header, revokedPanel, stateNote } from "./header.js";
import { waitsForMe } from "../model.js";

const STATUS_LABELS = {
  "waiting-for-approval": "needs approval",
  running: "running",
  idle: "idle",
  finished: "finished",
  failed: "failed",
};

export function statusBadge(status) {
  return h("span.badge", { dataset: { status: status || "" } }, STATUS_LABELS[status] || status || "…");
}

function baseName(path) {
  return (path || "").replace(/\/+$/, "").split("/").pop() || path || "";
}

export function sessionTitle(s) {
  return s.title || (s.command || []).join(" ") || s.id;
}

export function hasScope(tether, hostId, scope) {
  const model = tether.models.get(hostId);
  const scopes = model?.info?.scopes || tether.host(hostId)?.scopes || [];
  return scopes.includes(scope);
}

// Which sessions the list shows: the ones not put away (or only those at work, or waiting), or
// the ones put away.
const FILTERS = {
  all: { label: "All", none: "sessions", keep: (s) => !s.archived },
  live: { label: "Live", none: "live sessions", keep: (s) => !s.archived && ["running", "idle", "waiting-for-approval"].includes(s.status) },
  waiting: { label: "Waiting for me", none: "sessions waiting for approval", keep: waitsForMe },
  archived: { label: "Archived", none: "archived sessions", keep: (s) => Boolean(s.archived) },
};

export function renderHost(root, { tether, hostId }) {
  const host = tether.host(hostId);
  if (!host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }), h("section.screen", h("p", "This host is not paired.")));
    return () => {};
  }
  const conn = tether.connection(hostId);
  const model = tether.model(hostId);
  const bar = h("div.topbar");
  const body = h("div.screen-body");

  let filter = "all";
  function draw() {
    // In place (morph): this runs on every event of every session, and a tap must not be lost.
    morph(bar, header({ title: host.name, back: "#/", state: conn.state, detail: conn.detail }), stateNote(conn.state, conn.detail));
    if (conn.state === "revoked") {
      replace(body, revokedPanel(host, { tether }));
      return;
    }
    const all = model.sortedSessions();
    const sessions = all.filter(FILTERS[filter].keep);
    const waitingOnes = all.filter(waitsForMe);
    const waiting = waitingOnes.length;
    const list = sessions.length
      ? h(
          "div.list",
          { id: "sessions" },
          sessions.map((s) =>
            h(
              "a.row.session",
              { href: `#/host/${hostId}/session/${s.id}`, dataset: { session: s.id, status: s.status } },
              h(
                "span.main",
                h("strong", sessionTitle(s)),
                h("small", h("span.agent", s.agent), " · ", h("span", { title: s.workspace || "" }, baseName(s.workspace))),
              ),
              h("span.status", statusBadge(s.status), h("small", timeAgo(s.last_activity || s.created))),
            ),
          ),
        )
      : h("div.list", { id: "sessions" }, h("p.empty", conn.state !== "connected" && !all.length && !model.away ? "Loading…"
        : all.length ? `No ${FILTERS[filter].none}.` : "No sessions yet."));
    const chooser = h(
      "select",
      { id: "session-filter", "aria-label": "Which sessions", onchange: (ev) => ((filter = ev.target.value), draw()) },
      Object.entries(FILTERS).map(([value, f]) => h("option", { value, selected: value === filter }, f.label)),
    );
    morph(
      body,
      h(
        "section.screen",
        { id: "host" },
        h(
          "nav.actions.toolbar",
          { "aria-label": "Host actions" },
          h("a.button.primary", { id: "new-session", href: `#/host/${hostId}/new` }, "+ New session"),
          hasScope(tether, hostId, "admin") ? h("a.button", { id: "devices-link", href: `#/host/${hostId}/devices` }, "Devices") : null,
          h("a.button", { id: "settings-link", href: `#/host/${hostId}/settings`, "aria-label": "Settings" }, "Settings"),
        ),
        awayBanner(host, model, conn),
        host.linked
          ? h("p.hint.via", { id: "linked-via" }, ...withCode(`Linked via ${tether.viaName(host)}: started there with \`tether ssh\`, it accepts this browser as ${tether.viaName(host)} does.`))
          : null,
        // One tap to the one that waits (the first of them, when several do).
        waiting
          ? h("a.banner", { id: "waiting-banner", role: "status", href: `#/host/${hostId}/session/${waitingOnes[0].id}` },
            `${waiting} session${waiting > 1 ? "s" : ""} waiting for your approval ›`)
          : null,
        h("div.sessions-head", h("h2", "Sessions"), chooser),
        list,
      ),
    );
  }

  root.replaceChildren(bar, body);
  draw();
  const onChange = throttled(draw);
  conn.addEventListener("state", onChange);
  model.addEventListener("change", onChange);
  const tick = setInterval(draw, 30000); // "2 min ago" stays true
  return () => {
    clearInterval(tick);
    conn.removeEventListener("state", onChange);
    model.removeEventListener("change", onChange);
  };
}
