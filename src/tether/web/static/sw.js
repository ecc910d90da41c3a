// Service worker: the app shell loads offline, but the network always wins when it answers
// (network first), so an updated relay serves its new client at once. Only same-origin GETs of
// the shell are cached; the WebSocket and anything else pass through untouched.
// It also opens the session a notification (notify.js) is about when the notification is clicked.
const CACHE = "tether-shell-v13";
const SHELL = [
  "./", "index.html", "app.js", "style.css", "manifest.webmanifest", "icon.svg", "apple-touch-icon.png",
  "bytes.js", "noise.js", "frames.js", "relay.js", "e2e.js", "rpc.js", "store.js", "keys.js",
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
  const scope = self.registration.scope;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const page = windows.find((c) => c.focused) || windows.find((c) => c.url.startsWith(scope));
  if (!page) return self.clients.openWindow(new URL(hash, scope).href);
  page.postMessage({ type: "tether.open", hash });
  // Focusing needs the click's user activation: a page that cannot be focused still navigated.
  return page.focus().catch(() => page);
}
