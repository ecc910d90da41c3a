// Everything this browser remembers, in IndexedDB (database "tether"):
//
//   keys     "device" → {signing: CryptoKey (Ed25519, non-extractable), identityPublic: bytes,
//                        static: CryptoKey (X25519, non-extractable), staticPublic: bytes}
//   hosts    host_id  → {host_id, name, relay_url, host_static: bytes, device_id, scopes, paired_at}
//   cursors  host_id  → {host_id, cursor, sessions: [session]}   (event cursor + last known sessions)
//
// CryptoKey objects are structured-cloneable, so private keys are stored as keys, never as bytes:
// script on this origin can use them but nobody can read them out.

const DB_NAME = "tether";
const DB_VERSION = 1;

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
      };
      req.onsuccess = () => resolve(req.result);
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
  },

  getCursor: (hostId) => run("cursors", "readonly", (s) => s.get(hostId)),
  putCursor: (record) => run("cursors", "readwrite", (s) => s.put(record)),
};

export { request as idbRequest };
