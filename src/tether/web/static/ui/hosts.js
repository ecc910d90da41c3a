// Paired hosts: online/offline (WATCH/PRESENCE), when each was last seen, and revoked ones.
import { h, lastSeen, replace, timeAgo } from "./dom.js";
import { header, stateNote } from "./header.js";

function hostState(tether, host) {
  if (host.revoked) return "revoked";
  return tether.online(host) ? "online" : "offline";
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
    return h(
      "a.row.host",
      {
        href: `#/host/${host.host_id}`,
        dataset: { host: host.host_id, online: state === "online" ? "1" : "0", state },
        "aria-label": `${host.name}, ${state}`,
      },
      h("span.dot", { dataset: { on: state === "online" ? "1" : "0", state }, "aria-hidden": "true" }),
      h("span.main", h("strong.name", host.name), h("small", state === "online" ? host.host_id : state === "revoked" ? "this browser was revoked" : lastSeen(host.last_seen))),
      h("span.presence", { dataset: { state } }, state),
      h("span.chev", { "aria-hidden": "true" }, "›"),
    );
  });
  replace(
    root,
    header({ title: "Hosts", state: relayState, detail }),
    stateNote(relayState, detail),
    h(
      "section.screen",
      { id: "hosts" },
      list.length
        ? h("div.list", list)
        : h(
            "div.empty",
            h("p", "No host paired yet."),
            h("p.hint", "On your machine run `tether pair` (or `tether up`) and open the link it prints on this device."),
          ),
      list.length ? h("p.hint", "To add a host, run `tether pair` on it and open the link here.") : null,
      h("a.button", { id: "scan-link", href: "#/scan" }, "Scan a QR code to pair"),
      tether.identity ? h("p.hint.device", `This browser: ${tether.identity.id}`) : null,
    ),
  );
}

export { timeAgo };
