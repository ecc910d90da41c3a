// Paired hosts: online/offline (WATCH/PRESENCE), when each was last seen, and revoked ones; hosts
// linked to a paired host (started there with `tether ssh`) are listed alike, "via" that host. A
// linked host its parent unlinked (`tether ssh forget`) leaves the list with a notice saying so.
import { h, lastSeen, morph, replace, timeAgo, withCode } from "./dom.js";
import { header, stateNote } from "./header.js";
import { sameRelay } from "../linked.js";

function hostState(tether, host) {
  if (host.revoked) return "revoked";
  return tether.online(host) ? "online" : "offline";
}

// The second line of a row: the host id while online, else why not.
function stateLine(host, state) {
  if (state === "online") return host.host_id;
  if (state === "revoked") {
    return host.linked ? "this browser is refused there" : "this browser was revoked";
  }
  const announced = host.linked?.relay_url;
  if (announced && !sameRelay(announced, host.relay_url)) return `${lastSeen(host.last_seen)} · announced on ${announced}`;
  return lastSeen(host.last_seen);
}

export function renderHosts(root, { tether }) {
  const relays = [...tether.relays.values()];
  const relayState = relays.length === 0 ? null : relays.every((r) => r.state === "connected") ? "connected" : relays.some((r) => r.state === "connected") ? "connecting" : relays[0].state;
  const detail = relays.find((r) => r.state !== "connected")?.detail || "";
  const hosts = [...tether.hosts].sort((a, b) => {
    const rank = (x) => ({ online: 0, offline: 1, revoked: 2 })[hostState(tether, x)];
    return rank(a) - rank(b) || a.name.localeCompare(b.name);
  });
  const list = hosts.map((host) => {
    const state = hostState(tether, host);
    const via = tether.viaName(host);
    const label = state === "revoked" && host.linked ? "refused" : state;
    const waiting = state === "revoked" ? 0 : tether.waiting(host.host_id).length;
    const said = waiting ? `, ${waiting} waiting for approval` : "";
    return h(
      "a.row.host",
      {
        href: `#/host/${host.host_id}`,
        dataset: { host: host.host_id, online: state === "online" ? "1" : "0", state, ...(host.linked ? { via: host.linked.via } : {}) },
        "aria-label": (via ? `${host.name}, via ${via}, ${label}` : `${host.name}, ${label}`) + said,
      },
      h("span.dot", { dataset: { on: state === "online" ? "1" : "0", state }, "aria-hidden": "true" }),
      h(
        "span.main",
        h("strong.name", host.name),
        via ? h("small.via", `via ${via}`) : null,
        h("small.state", stateLine(host, state)),
      ),
      waiting ? h("span.waiting", { title: `${waiting} waiting for your approval` }, `${waiting} waiting`) : null,
      h("span.presence", { dataset: { state } }, label),
      h("span.chev", { "aria-hidden": "true" }, "›"),
    );
  });
  // Redrawn in place while this screen shows (morph); drawn anew when coming from another.
  (root.querySelector(":scope > section#hosts") ? morph : replace)(
    root,
    header({ title: "Hosts", state: relayState, detail }),
    stateNote(relayState, detail),
    h(
      "section.screen",
      { id: "hosts" },
      tether.notice ? h("p.banner", { id: "hosts-notice", role: "status", dataset: { host: tether.notice.hostId } }, tether.notice.text) : null,
      list.length
        ? h("div.list", list)
        : h(
            "div.empty",
            h("p", "No host paired yet."),
            h("p.hint", ...withCode("On your machine run `tether up` (or `tether pair`) and open the link it prints on this device.")),
          ),
      list.length ? h("p.hint", ...withCode("To add a host, run `tether pair` on it and open the link here.")) : null,
      h("a.button", { id: "scan-link", href: "#/scan" }, "Scan a QR code to pair"),
      tether.identity ? h("p.hint.device", `This browser: ${tether.identity.id}`) : null,
    ),
  );
}

export { timeAgo };
