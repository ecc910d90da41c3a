// Settings of one paired host, as this browser knows it: what it may do there, and "forget this
// host" (deletes the host and its cursor from IndexedDB; the host still lists this device until
// someone revokes it there). Also this browser's notifications (for every host: notify.js).
import { h, lastSeen, replace, withCode } from "./dom.js";
import { header } from "./header.js";
import { sameRelay } from "../linked.js";
import { notifySupport, notifyWanted, setNotify } from "../notify.js";
import { SCROLLBACK_CHOICES, scrollbackLines, setScrollbackLines } from "../prefs.js";

const NOTIFY_STATES = {
  granted: "Allowed in this browser.",
  default: "Not asked yet: this browser asks when you turn it on.",
  denied: "Blocked for this site in this browser: allow notifications for it in the browser's site settings, then turn this on.",
  unsupported: "This browser cannot show notifications here. On iPhone and iPad, add tether to the Home Screen first (iOS 16.4 or later).",
};

const PUSH_STATES = {
  subscribing: "Asking this host to push to this browser…",
  subscribed: "This host pushes to this browser, also with the page closed.",
  unsupported: "This browser has no push service here: notifications come only while the page is open.",
  off: "This host sends no pushes ([push] in its config.toml): notifications come only while the page is open.",
  failed: "Could not subscribe to this host's pushes: notifications come only while the page is open.",
};

// Safari on iPhone or iPad, in a tab rather than from the Home Screen: no Web Push there.
function iosOutsideHomeScreen() {
  const ios = /iPhone|iPad|iPod/.test(navigator.userAgent) || (navigator.platform === "MacIntel" && navigator.maxTouchPoints > 1);
  return ios && !window.navigator.standalone && !window.matchMedia?.("(display-mode: standalone)").matches;
}

// The toggle and what the browser allows. Asking for the permission happens only in the toggle's
// change handler, a user gesture.
function notifySection(redraw, { notifier, hostId }) {
  const state = notifySupport();
  const toggle = h("input", {
    id: "notify-toggle",
    type: "checkbox",
    checked: notifyWanted() && state === "granted",
    disabled: state === "unsupported" || state === "denied",
    "aria-describedby": "notify-state",
    onchange: async (ev) => {
      ev.target.disabled = true;
      const on = ev.target.checked;
      const now = await setNotify(on).catch(() => null);
      if (on && now === "granted") await notifier?.push();
      else if (!on) await notifier?.unpush();
      redraw();
    },
  });
  return [
    h("h2", "Notifications"),
    h(
      "label.choice.toggle",
      toggle,
      h(
        "span",
        h("strong", "Notify me when an agent needs me"),
        h("small", "When a session waits for your approval, finishes its turn or fails, while this page is open in the background. For every host in this browser."),
      ),
    ),
    h("p.hint.notify-state", { id: "notify-state", dataset: { state }, role: "status" }, NOTIFY_STATES[state]),
    notifyWanted() && state === "granted"
      ? h("p.hint", { id: "push-state", dataset: { state: notifier?.pushed.get(hostId) || "" } }, PUSH_STATES[notifier?.pushed.get(hostId)] || "")
      : null,
    iosOutsideHomeScreen()
      ? h("p.hint", { id: "ios-hint" }, "On iPhone and iPad, notifications with the page closed need tether on the Home Screen: Share, then Add to Home Screen, and open it from there (iOS 16.4 or later).")
      : null,
  ];
}

export function renderSettings(root, { tether, hostId }) {
  const host = tether.host(hostId);
  if (!host) {
    root.replaceChildren(header({ title: "Unknown host", back: "#/" }));
    return () => {};
  }
  let confirming = false;
  const body = h("div.screen-body");
  function draw() {
    // This browser's workspace restriction, as the host says (host.info), once it has said so.
    const restriction = tether.models.get(hostId)?.info?.workspace || null;
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
          restriction ? [h("dt", "Workspace"), h("dd.mono", { id: "settings-workspace" }, restriction)] : null,
          h("dt", "Status"), h("dd", host.revoked ? (host.linked ? "refused" : "revoked") : tether.online(host) ? "online" : lastSeen(host.last_seen)),
        ),
        notifySection(draw, { notifier: tether.notifier, hostId }),
        h("h2", "Terminal"),
        h(
          "div.field",
          h("label", { for: "scrollback" }, "Lines a terminal keeps"),
          h(
            "select",
            { id: "scrollback", onchange: (ev) => setScrollbackLines(Number(ev.target.value)) },
            SCROLLBACK_CHOICES.map((n) => h("option", { value: String(n), selected: n === scrollbackLines() }, n.toLocaleString("en"))),
          ),
          h("small.hint", "For terminals opened from now on, in this browser. More lines use more memory."),
        ),
        h("h2", "Forget this host"),
        host.linked
          ? h("p.hint", ...withCode(`Removes the host from this browser, until ${tether.viaName(host)} announces it again (another \`tether ssh\`). To stop this browser there for good, revoke it on ${tether.viaName(host)}: ${host.name} follows its devices.`))
          : h("p.hint", ...withCode("Removes the host from this browser. To stop this browser for good, also revoke it on the host (Devices, or `tether devices revoke`).")),
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
  // Allowed or blocked in the browser's own settings meanwhile: show it.
  let permission = null;
  let gone = false;
  navigator.permissions?.query({ name: "notifications" }).then(
    (status) => {
      if (gone) return;
      permission = status;
      permission.onchange = () => draw();
    },
    () => {},
  );
  // The push subscription's state changed (subscribed, failed): show it.
  const onPush = () => draw();
  window.addEventListener("tether-push", onPush);
  return () => {
    gone = true;
    if (permission) permission.onchange = null;
    window.removeEventListener("tether-push", onPush);
  };
}
