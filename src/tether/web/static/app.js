// The tether web client: entry point and router.
//
//   #pair=…                          pairing link (read once, then removed from the URL and history)
//   #/                               hosts
//   #/scan                           scan a pairing link's QR code with the camera
//   #/host/<host id>                 one host's sessions
//   #/host/<host id>/new             start a session
//   #/host/<host id>/devices         the host's devices (admin)
//   #/host/<host id>/settings        this host in this browser: forget it
//   #/host/<host id>/session/<id>    one session (terminal, or agent conversation)
//
// Modules: bytes/noise/frames (wire, sans-I/O) → relay/e2e/rpc (I/O) → connection (reconnects,
// subscriptions) → model (state) → ui/* (screens). Screens only read models and call methods.

import { readPairingFragment } from "./pairing.js";
import { cryptoSupport } from "./keys.js";
import { Tether } from "./model.js";
import { Notifier } from "./notify.js";
import { renderInsecure } from "./ui/insecure.js";
import { renderPair } from "./ui/pair.js";
import { renderHosts } from "./ui/hosts.js";
import { renderHost } from "./ui/host.js";
import { renderSession } from "./ui/session.js";
import { renderNewSession } from "./ui/newsession.js";
import { renderDevices } from "./ui/devices.js";
import { renderSettings } from "./ui/settings.js";
import { renderScan } from "./ui/scan.js";

const root = document.getElementById("app");

function secureEnough() {
  return window.isSecureContext && window.crypto && window.crypto.subtle;
}

function routeParts() {
  return window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
}

async function main() {
  if (!secureEnough()) {
    renderInsecure(root);
    return;
  }
  // Synchronously, before anything else runs: the secret leaves the address bar and history now.
  let pairing = readPairingFragment();
  const missing = await cryptoSupport();
  if (missing.length) {
    renderInsecure(root, { missing });
    return;
  }

  const tether = new Tether();
  window.tether = tether; // for debugging and tests
  // Before load: it follows every host model from the first.
  if ("serviceWorker" in navigator) tether.notifier = new Notifier(tether);
  // The page's title counts the sessions that wait for approval, on every host: "(2) tether".
  const title = () => {
    const n = tether.hosts.reduce((sum, h) => sum + tether.waiting(h.host_id).length, 0);
    document.title = n ? `(${n}) tether` : "tether";
  };
  tether.addEventListener("model", (ev) => ev.detail.model.addEventListener("change", title));
  tether.addEventListener("change", title);
  await tether.load();

  let cleanup = () => {};
  let pairingShown = Boolean(pairing);

  function route() {
    cleanup();
    cleanup = () => {};
    if (pairingShown) {
      renderPair(root, {
        tether,
        link: pairing.link,
        error: pairing.error,
        done: async (host) => {
          pairingShown = false;
          await tether.added(host);
          window.location.hash = "#/";
          route();
        },
      });
      pairingShown = false; // navigating away abandons the pairing
      return;
    }
    const parts = routeParts();
    // A host dropped on its parent's word is told on the hosts screen, until another screen opens.
    if (parts.length) tether.notice = null;
    if (parts[0] === "scan") {
      cleanup = renderScan(root);
    } else if (parts[0] === "host" && parts[1] && parts[2] === "session" && parts[3]) {
      cleanup = renderSession(root, { tether, hostId: parts[1], sessionId: parts[3] });
    } else if (parts[0] === "host" && parts[1] && parts[2] === "new") {
      cleanup = renderNewSession(root, { tether, hostId: parts[1] });
    } else if (parts[0] === "host" && parts[1] && parts[2] === "devices") {
      cleanup = renderDevices(root, { tether, hostId: parts[1] });
    } else if (parts[0] === "host" && parts[1] && parts[2] === "settings") {
      cleanup = renderSettings(root, { tether, hostId: parts[1] });
    } else if (parts[0] === "host" && parts[1]) {
      cleanup = renderHost(root, { tether, hostId: parts[1] });
    } else {
      const draw = () => renderHosts(root, { tether });
      // Each host's model, so its row can say how many sessions wait for approval.
      const models = tether.hosts.filter((h) => !h.revoked).map((h) => tether.model(h.host_id)).filter(Boolean);
      draw();
      tether.addEventListener("change", draw);
      for (const m of models) m.addEventListener("change", draw);
      const tick = setInterval(draw, 30000); // "last seen 2 min ago" stays true
      cleanup = () => {
        tether.removeEventListener("change", draw);
        for (const m of models) m.removeEventListener("change", draw);
        clearInterval(tick);
      };
    }
  }

  // A linked host unlinked by its parent (`tether ssh forget`) while one of its screens is open:
  // back to the hosts, which say why.
  tether.addEventListener("change", (ev) => {
    if (ev.detail.kind !== "unlinked" || pairingShown) return;
    const parts = routeParts();
    if (parts[0] === "host" && parts[1] === ev.detail.hostId) window.location.hash = "#/";
  });

  window.addEventListener("hashchange", () => {
    // A pairing link opened in this already-open page (only the fragment changed): same rule,
    // the secret leaves the address bar first.
    const another = readPairingFragment();
    if (another) {
      pairing = another;
      pairingShown = true;
    }
    route();
    // Focus the new screen's title, so a screen reader announces where we are.
    const title = root.querySelector("h1");
    if (title) (title.tabIndex = -1), title.focus({ preventScroll: true });
  });
  window.addEventListener("online", () => tether.wake());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") tether.wake();
  });
  route();
  document.body.dataset.ready = "1";

  if ("serviceWorker" in navigator) {
    // A notification was clicked while this page is open: show that session (sw.js).
    navigator.serviceWorker.addEventListener("message", (ev) => {
      const hash = ev.data?.type === "tether.open" ? ev.data.hash : null;
      if (typeof hash === "string" && hash.startsWith("#/")) window.location.hash = hash;
    });
    navigator.serviceWorker.register("sw.js").catch((err) => console.warn("service worker not registered", err));
  }
}

main().catch((err) => {
  console.error(err);
  root.textContent = `tether failed to start: ${err.message || err}`;
});
