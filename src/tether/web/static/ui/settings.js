// Settings of one paired host, as this browser knows it: what it may do there, and "forget this
// host" (deletes the host and its cursor from IndexedDB; the host still lists this device until
// someone revokes it there).
import { h, lastSeen, replace } from "./dom.js";
import { header } from "./header.js";
import { sameRelay } from "../linked.js";

export function renderSettings(root, { tether, hostId }) {
  const host = tether.host(hostId);
  if (!host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }));
    return () => {};
  }
  let confirming = false;
  const body = h("div.screen-body");
  function draw() {
    replace(
      body,
      h(
        "section.screen",
        { id: "settings" },
        h(
          "dl.facts",
          h("dt", "Host"), h("dd", host.name),
          h("dt", "Host id"), h("dd.mono", host.host_id),
          h("dt", "Relay"), h("dd.mono", host.relay_url),
          host.linked ? [h("dt", "Linked via"), h("dd", { id: "settings-via" }, tether.viaName(host))] : null,
          host.linked && !sameRelay(host.linked.relay_url, host.relay_url)
            ? [h("dt", "Announced relay"), h("dd.mono", host.linked.relay_url)]
            : null,
          h("dt", "This browser"), h("dd.mono", host.device_id),
          h("dt", "Scopes"), h("dd", (host.scopes || []).join(", ") || "none"),
          h("dt", "Status"), h("dd", host.revoked ? (host.linked ? "refused" : "revoked") : tether.online(host) ? "online" : lastSeen(host.last_seen)),
        ),
        h("h2", "Forget this host"),
        host.linked
          ? h("p.hint", `Removes the host from this browser, until ${tether.viaName(host)} announces it again (another \`tether ssh\`). To stop this browser there for good, revoke it on ${tether.viaName(host)}: ${host.name} follows its devices.`)
          : h("p.hint", "Removes the host from this browser. To stop this browser for good, also revoke it on the host (Devices, or `tether devices revoke`)."),
        confirming
          ? h(
              "div.actions",
              h("button.danger", { id: "confirm-forget", type: "button", onclick: async () => (await tether.forget(hostId), (window.location.hash = "#/")) }, "Forget it"),
              h("button", { type: "button", onclick: () => ((confirming = false), draw()) }, "Cancel"),
            )
          : h("button.danger", { id: "forget-host", type: "button", onclick: () => ((confirming = true), draw()) }, "Forget this host"),
      ),
    );
  }
  root.replaceChildren(header({ title: "Settings", back: `#/host/${hostId}` }), body);
  draw();
  return () => {};
}
