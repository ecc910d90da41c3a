// Paired hosts with online/offline (WATCH/PRESENCE).
import { h, replace, timeAgo } from "./dom.js";
import { header, stateNote } from "./header.js";

export function renderHosts(root, { tether }) {
  const relays = [...tether.relays.values()];
  const relayState = relays.length === 0 ? null : relays.every((r) => r.state === "connected") ? "connected" : relays.some((r) => r.state === "connected") ? "connecting" : relays[0].state;
  const detail = relays.find((r) => r.state !== "connected")?.detail || "";
  const list = tether.hosts.map((host) => {
    const online = tether.online(host);
    return h(
      "a.row.host",
      { href: `#/host/${host.host_id}`, dataset: { host: host.host_id, online: online ? "1" : "0" } },
      h("span.dot", { dataset: { on: online ? "1" : "0" } }),
      h("span.main", h("strong.name", host.name), h("small", host.host_id)),
      h("span.presence", online ? "online" : "offline"),
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
      tether.identity ? h("p.hint.device", `This browser: ${tether.identity.id}`) : null,
    ),
  );
}

export { timeAgo };
