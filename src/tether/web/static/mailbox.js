// The relay's mailbox of a host that is away (ARCHITECTURE §8b), this browser's side: the twin of
// protocol/mailbox.py (what a sealed blob holds, and the context it is bound to) and of
// client/mailbox.py (reading the snapshot, queueing an item).
//
//   read()    what the host last left this browser: {depositedAt (ms), snapshot}, or null.
//             Sealed for this browser alone; opened only if it comes from the host key pinned at
//             pairing, for this host.
//   queue()   a prompt, an approval or an answer sealed for the host and left at the relay; the
//             host applies it once, in order, when it is back, or says on the session why not
//             (a mailbox.refused event with the request's cid).
//
// What was queued stays in IndexedDB (the outbox) until an event with its cid shows the host took
// it (or refused it), so a reloaded page still shows it waiting. Item numbers (n) only grow per
// host: the last one is kept in IndexedDB too, and each is at least the time in ms, as in Python.

import { concat, equal, fromUtf8, utf8 } from "./bytes.js";
import { CloseCode, closeMessage } from "./frames.js";
import { MailboxRefused, RelayError } from "./relay.js";
import { MAX_SEALED_PLAINTEXT, SealError, openSealed, seal } from "./seal.js";
import { store } from "./store.js";

export const SNAPSHOT = "S"; // host → device
export const ITEM = "I"; // device → host
export const QUEUEABLE = new Set(["sessions.send", "sessions.approve", "sessions.answer"]);

const CONTEXT = utf8("tether-mailbox/1\0");
// A queued item waits at most 7 days at the relay (MailboxLimits): an outbox entry no event
// settled by then never will be.
const OUTBOX_DAYS = 8;
// How long a request waits for the relay connection to come back before it fails.
const RELAY_WAIT_MS = 15000;

// The prologue a sealed mailbox blob of `kind` for or from `hostId` is bound to.
export function context(kind, hostId) {
  return concat(CONTEXT, utf8(kind), utf8(hostId));
}

export class MailboxError extends Error {
  constructor(message, hint = null) {
    super(message);
    this.name = "MailboxError";
    this.code = "mailbox";
    this.hint = hint;
  }
}

function isSnapshot(value) {
  return (
    value !== null && typeof value === "object" && typeof value.host_id === "string" &&
    typeof value.taken_at === "number" && Array.isArray(value.sessions) &&
    value.events !== null && typeof value.events === "object"
  );
}

export class Mailbox {
  // conn: the host's HostConnection (its host record, relay connection and this browser's keys).
  constructor(conn) {
    this.conn = conn;
    this._queueing = Promise.resolve();
    this._outbox = null; // cid → entry, loaded once
  }

  get host() {
    return this.conn.host;
  }

  async _link() {
    const relay = this.conn.relay;
    if (relay.link && !relay.link.isClosed) return relay.link;
    let timer;
    const late = new Promise((resolve, reject) => {
      timer = setTimeout(
        () => reject(new RelayError(`cannot reach the relay: ${relay.detail || "not connected"}`)),
        RELAY_WAIT_MS,
      );
    });
    try {
      return await Promise.race([relay.connected(), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async read() {
    const host = this.host;
    const held = await (await this._link()).snapshot(host.host_id);
    if (!held) return null;
    let opened;
    let snapshot;
    try {
      opened = await openSealed(this.conn.identity.staticKey, context(SNAPSHOT, host.host_id), held.sealed);
      snapshot = JSON.parse(fromUtf8(opened.plaintext));
    } catch {
      throw new MailboxError(
        "the relay holds a snapshot for this browser that does not open",
        "it was altered, or left by an older host key; it shows again once the host is back",
      );
    }
    if (!isSnapshot(snapshot)) throw new MailboxError("the snapshot at the relay is not one this page can read");
    if (!equal(opened.sender, host.host_static) || snapshot.host_id !== host.host_id) {
      throw new MailboxError(
        `the snapshot at the relay was not sealed by ${host.name}'s key`,
        "it shows again once the host is back (it may have rotated its key)",
      );
    }
    return { depositedAt: held.depositedAt, snapshot };
  }

  // Leave `method(params)` (params with their cid) for the host; one at a time, so items reach
  // the relay in the order of their numbers. `shown` is what the outbox keeps to show it again
  // ({text} of a prompt, {approval, decision} of an answer). Resolves with the outbox entry.
  queue(method, params, shown = {}) {
    const run = this._queueing.then(() => this._queue(method, params, shown));
    this._queueing = run.catch(() => {});
    return run;
  }

  async _queue(method, params, shown) {
    if (!QUEUEABLE.has(method)) throw new MailboxError(`${method} cannot wait at the relay`);
    const host = this.host;
    const link = await this._link();
    const n = await store.takeMailboxNumber(host.host_id);
    const queuedAt = Date.now() / 1000;
    const plaintext = utf8(JSON.stringify({ host_id: host.host_id, n, queued_at: queuedAt, method, params }));
    if (plaintext.length > MAX_SEALED_PLAINTEXT) throw new MailboxRefused(CloseCode.TOO_LARGE, closeMessage(CloseCode.TOO_LARGE));
    let sealed;
    try {
      sealed = await seal(this.conn.identity.staticKey, host.host_static, context(ITEM, host.host_id), plaintext);
    } catch (err) {
      throw err instanceof SealError ? err : new SealError(String(err));
    }
    const item = await link.queue(host.host_id, sealed);
    const entry = {
      cid: params.cid, host_id: host.host_id, session: params.id, method, n, item, queued_at: queuedAt, ...shown,
    };
    (await this._entries()).set(entry.cid, entry);
    await store.putOutbox(entry).catch((err) => console.warn("keeping the queued item failed", err));
    return entry;
  }

  async _entries() {
    if (!this._outbox) {
      const oldest = Date.now() / 1000 - OUTBOX_DAYS * 86400;
      const entries = await store.listOutbox(this.host.host_id).catch(() => []);
      this._outbox = new Map();
      for (const entry of entries) {
        if (entry.queued_at < oldest) store.deleteOutbox(entry.cid).catch(() => {});
        else this._outbox.set(entry.cid, entry);
      }
    }
    return this._outbox;
  }

  // What this browser queued for one session and the host has not yet taken, oldest first.
  async outbox(sessionId) {
    return [...(await this._entries()).values()].filter((e) => e.session === sessionId).sort((a, b) => a.n - b.n);
  }

  // Events of the host: one carrying a queued item's cid means the host took it (or refused it,
  // which the session says): it leaves the outbox.
  async settle(events) {
    const cids = events.map((ev) => ev.cid).filter(Boolean);
    if (!cids.length) return;
    const entries = await this._entries();
    for (const cid of cids) {
      if (!entries.has(cid)) continue;
      entries.delete(cid);
      await store.deleteOutbox(cid).catch(() => {});
    }
  }
}
