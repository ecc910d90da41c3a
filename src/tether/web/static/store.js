// Everything this browser remembers, in IndexedDB (database "tether"):
//
//   keys     "device" → {signing: CryptoKey (Ed25519, non-extractable), identityPublic: bytes,
//                        static: CryptoKey (X25519, non-extractable), staticPublic: bytes}
//   hosts    host_id  → {host_id, name, relay_url, host_static: bytes, device_id, scopes, paired_at,
//                        node_url?}   (node_url: the cluster node that held the host last, from a
//                        relay node's REDIRECT; tried first, dropped when it fails)
//   cursors  host_id  → {host_id, cursor, sessions: [session]}   (event cursor + last known sessions)
//   mailbox  host_id  → {host_id, n}   (the number of the last item queued for the host at the relay)
//   outbox   cid      → {cid, host_id, session, method, text, decision, approval, n, item, queued_at}
//                       (what this browser queued at the relay and has not seen applied or refused)
//
// CryptoKey objects are structured-cloneable, so private keys are stored as keys, never as bytes:
// script on this origin can use them but nobody can read them out.

const DB_NAME = "tether";
// 2 added mailbox and outbox; an upgrade only adds the stores it lacks, so nothing is lost.
const DB_VERSION = 2;

let dbPromise = null;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export function openDb() {
  if (dbPromise === null) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains("keys")) db.createObjectStore("keys");
        if (!db.objectStoreNames.contains("hosts")) db.createObjectStore("hosts", { keyPath: "host_id" });
        if (!db.objectStoreNames.contains("cursors")) db.createObjectStore("cursors", { keyPath: "host_id" });
        if (!db.objectStoreNames.contains("mailbox")) db.createObjectStore("mailbox", { keyPath: "host_id" });
        if (!db.objectStoreNames.contains("outbox")) db.createObjectStore("outbox", { keyPath: "cid" });
      };
      req.onsuccess = () => {
        const db = req.result;
        // A newer page (another tab, after an update) upgrades the database: let it.
        db.onversionchange = () => {
          db.close();
          dbPromise = null;
        };
        resolve(db);
      };
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error("another tab holds an old version of tether's storage; close it"));
    });
  }
  return dbPromise;
}

async function run(storeName, mode, fn) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(storeName, mode);
    const result = fn(tx.objectStore(storeName));
    tx.oncomplete = () => resolve(result instanceof IDBRequest ? result.result : result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("storage transaction aborted"));
  });
}

export const store = {
  getKeys: () => run("keys", "readonly", (s) => s.get("device")),
  putKeys: (keys) => run("keys", "readwrite", (s) => s.put(keys, "device")),
  // Adds only when absent, so two tabs racing to create keys keep one set.
  addKeys: (keys) => run("keys", "readwrite", (s) => s.add(keys, "device")),

  listHosts: () => run("hosts", "readonly", (s) => s.getAll()),
  getHost: (hostId) => run("hosts", "readonly", (s) => s.get(hostId)),
  putHost: (host) => run("hosts", "readwrite", (s) => s.put(host)),
  deleteHost: async (hostId) => {
    await run("hosts", "readwrite", (s) => s.delete(hostId));
    await run("cursors", "readwrite", (s) => s.delete(hostId));
    await run("mailbox", "readwrite", (s) => s.delete(hostId));
    for (const entry of await store.listOutbox(hostId)) await store.deleteOutbox(entry.cid);
  },

  getCursor: (hostId) => run("cursors", "readonly", (s) => s.get(hostId)),
  putCursor: (record) => run("cursors", "readwrite", (s) => s.put(record)),

  // The next item number for a host: above the last one taken and at least the time in ms (as
  // client/mailbox.py: a number taken is never taken again, even after this store was cleared).
  // Read and written in one transaction, so two tabs never take the same one.
  takeMailboxNumber: (hostId) =>
    run("mailbox", "readwrite", (s) => {
      const taken = { n: 0 };
      const req = s.get(hostId);
      req.onsuccess = () => {
        taken.n = Math.max((req.result?.n || 0) + 1, Date.now());
        s.put({ host_id: hostId, n: taken.n });
      };
      return taken;
    }).then((taken) => taken.n),

  listOutbox: async (hostId) => (await run("outbox", "readonly", (s) => s.getAll())).filter((e) => e.host_id === hostId),
  putOutbox: (entry) => run("outbox", "readwrite", (s) => s.put(entry)),
  deleteOutbox: (cid) => run("outbox", "readwrite", (s) => s.delete(cid)),
};

export { request as idbRequest };
