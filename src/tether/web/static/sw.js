// Service worker: the app shell loads offline, but the network always wins when it answers
// (network first), so an updated relay serves its new client at once. Only same-origin GETs of
// the shell are cached; the WebSocket and anything else pass through untouched.
const CACHE = "tether-shell-v5";
const SHELL = [
  "./", "index.html", "app.js", "style.css", "manifest.webmanifest", "icon.svg",
  "bytes.js", "noise.js", "frames.js", "relay.js", "e2e.js", "rpc.js", "store.js", "keys.js",
  "connection.js", "pairing.js", "model.js", "linked.js",
  "ui/dom.js", "ui/header.js", "ui/insecure.js", "ui/pair.js", "ui/hosts.js", "ui/host.js", "ui/session.js", "ui/terminal.js",
  "ui/conversation.js", "ui/newsession.js", "ui/devices.js", "ui/settings.js", "ui/scan.js",
  "vendor/xterm.js", "vendor/xterm.css", "vendor/addon-fit.js", "vendor/jsQR.js",
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
