// Service worker: the app shell loads offline, but the network always wins when it answers
// (network first), so an updated relay serves its new client at once. Only same-origin GETs of
// the shell are cached; the WebSocket and anything else pass through untouched.
// It also shows what a host pushes (Web Push; one registration per host, scope push/<host id>/:
// notify.js), and opens the session a notification is about when the notification is clicked.
const CACHE = "tether-shell-v19";
const SHELL = [
  "./", "index.html", "app.js", "style.css", "manifest.webmanifest", "icon.svg", "apple-touch-icon.png",
  "bytes.js", "noise.js", "seal.js", "frames.js", "relay.js", "e2e.js", "rpc.js", "store.js", "keys.js", "mailbox.js",
  "connection.js", "pairing.js", "model.js", "linked.js", "notify.js", "words.js", "prefs.js",
  "ui/dom.js", "ui/header.js", "ui/insecure.js", "ui/pair.js", "ui/hosts.js", "ui/host.js", "ui/session.js", "ui/terminal.js",
  "ui/conversation.js", "ui/newsession.js", "ui/devices.js", "ui/settings.js", "ui/scan.js", "ui/attach.js",
  "vendor/xterm.js", "vendor/xterm.css", "vendor/addon-fit.js", "vendor/jsQR.js", "vendor/marked.esm.js",
  "vendor/purify.es.js", "ui/markdown.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || url.pathname.endsWith("/ws")) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request, { ignoreSearch: true }).then((hit) => hit || caches.match("index.html"))),
  );
});

// What a host pushed (host/push/notices.py): a notification, or the close of one answered elsewhere.
// The words are made here; the push carries only the host, the session's title and the kind.
const PUSH_BODIES = {
  approval: "waits for your approval",
  question: "asks you a question",
  turn_finished: "finished its turn",
  turn_failed: "turn failed",
  session_finished: "finished",
  session_failed: "failed",
};

self.addEventListener("push", (event) => {
  let msg = null;
  try {
    msg = event.data?.json();
  } catch {
    return; // not from a tether host
  }
  if (msg && typeof msg.tag === "string" && msg.tag.startsWith("tether:")) {
    // A push that cannot be shown (permission withdrawn, say) says why where a developer looks.
    event.waitUntil(showPush(msg).catch((err) => console.warn("tether: a push was not shown:", err)));
  }
});

async function showPush(msg) {
  if (msg.kind === "close") {
    for (const n of await self.registration.getNotifications({ tag: msg.tag })) n.close();
    return;
  }
  const body = PUSH_BODIES[msg.kind];
  if (!body) return;
  // Someone is looking at the page: it shows the session itself.
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  if (windows.some((w) => w.visibilityState === "visible" && w.focused)) return;
  const short = (t, n) => (String(t ?? "").length > n ? `${String(t).slice(0, n - 1)}…` : String(t ?? ""));
  const hash = `#/host/${msg.host}/session/${msg.session}`;
  await self.registration.showNotification(`${short(msg.host_name || msg.host, 40)} · ${short(msg.title, 40)}`, {
    body,
    tag: msg.tag,
    data: { hostId: msg.host, session: msg.session, hash, approval: msg.approval },
    icon: "icon-192.png",
  });
}

// A notification clicked: the page at that session. An open page is told where to go (it may not
// be controlled by this worker, so it navigates itself) and focused; else a new window opens there.
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const opening = openAt(event.notification.data);
  // (A script-made event, as the tests dispatch, cannot be waited for.)
  if (event.isTrusted) event.waitUntil(opening);
});

async function openAt(data) {
  const hash = typeof data?.hash === "string" && data.hash.startsWith("#/") ? data.hash : "#/";
  // The app's root (beside this script), also for a per-host push registration (scope push/<id>/).
  const root = new URL("./", self.location.href).href;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const page = windows.find((c) => c.focused) || windows.find((c) => c.url.startsWith(root));
  if (!page) return self.clients.openWindow(new URL(hash, root).href);
  page.postMessage({ type: "tether.open", hash });
  // Focusing needs the click's user activation: a page that cannot be focused still navigated.
  return page.focus().catch(() => page);
}
