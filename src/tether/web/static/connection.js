// Live connections, kept alive across network cuts, relay restarts and sleeping phones:
//
//   RelayConnection  one WebSocket per relay URL: admission, WATCH/PRESENCE, reconnect with backoff
//   HostConnection   one IK channel + RPC peer per paired host, over its relay's connection;
//                    calls retried across reconnects (commands carry a cid, so they apply once),
//                    event subscriptions resumed from their cursor with events.ack flow control.
//
// Both are EventTargets: "state" events carry {state, detail} for the UI.

import { CloseCode, RETRY_CODES } from "./frames.js";

// Channel endings that mean this device may not talk to the host any more (revoked, or unknown).
export const REVOKED_CODES = new Set([CloseCode.NOT_ALLOWED, CloseCode.REVOKED]);
import { ChannelClosed, RelayError, RelayLink } from "./relay.js";
import { E2ETransport, HandshakeFailed, TransportClosed } from "./e2e.js";
import { RemoteError, RpcPeer } from "./rpc.js";

// Jittered exponential backoff (backoff.py): 0.1 s doubling to 5 s, each wait drawn from [d/2, d].
export class Backoff {
  constructor(first = 100, maximum = 5000, factor = 2) {
    Object.assign(this, { first, maximum, factor, _next: first });
  }
  nextDelay() {
    const delay = this._next / 2 + Math.random() * (this._next / 2);
    this._next = Math.min(this._next * this.factor, this.maximum);
    return delay;
  }
  reset() {
    this._next = this.first;
  }
}

// Whether reconnecting could make a failed operation succeed (client/connection.py is_retryable).
export function isRetryable(err) {
  if (err instanceof ChannelClosed) return RETRY_CODES.has(err.closeCode);
  if (err instanceof HandshakeFailed || err instanceof RemoteError) return false;
  return err instanceof TransportClosed || err instanceof RelayError;
}

// The heartbeat through relay, channel and host: a stall that closes nothing (a mobile network
// that stops carrying packets) shows as no answer, and the page reconnects instead of showing
// "connected" over a dead path.
const HEARTBEAT_MS = 3000;
const HEARTBEAT_TIMEOUT_MS = 4000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function newCid() {
  return crypto.randomUUID().replace(/-/g, "");
}

export function describeError(err) {
  return err && err.message ? err.message : String(err);
}

// A sleep that wake() ends early (the network came back, the page became visible).
export class Sleeper {
  constructor() {
    this._wake = null;
    this._woken = false; // a wake() while not sleeping: the next sleep returns at once
  }
  sleep(ms) {
    // The news (e.g. the host is back online) may come while a connection attempt is still
    // failing; waiting out the whole delay after that would miss it.
    if (this._woken) {
      this._woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self._wake === done) self._wake = null;
        resolve();
      }
      this._wake = done;
    });
  }
  wake() {
    if (this._wake) this._wake();
    else this._woken = true;
  }
}

// What both connections are: a state for the UI ("state" events) and a loop (_run) that tries
// again after a backoff wait, which wake() cuts short, until stopped.
class Reconnecting extends EventTarget {
  constructor() {
    super();
    this.state = "connecting";
    this.detail = "";
    this._backoff = new Backoff();
    this._sleeper = new Sleeper();
    this._stopped = false;
  }

  _setState(state, detail = "") {
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
  }

  async _pause(ms = this._backoff.nextDelay()) {
    if (!this._stopped) await this._sleeper.sleep(ms);
  }
}

export class RelayConnection extends Reconnecting {
  constructor(relayUrl, identity) {
    super();
    this.relayUrl = relayUrl;
    this.identity = identity;
    this.link = null;
    this.presence = new Map();
    this._watched = new Set();
    this._run();
  }

  async _run() {
    while (!this._stopped) {
      this._setState("connecting", this.detail);
      try {
        const link = await RelayLink.connect(this.relayUrl, this.identity);
        if (this._stopped) {
          link.close();
          break;
        }
        this.link = link;
        link.addEventListener("presence", (ev) => {
          this.presence.set(ev.detail.hostId, ev.detail.online);
          this.dispatchEvent(new CustomEvent("presence", { detail: ev.detail }));
        });
        if (this._watched.size) link.watch([...this._watched]);
        this._backoff.reset();
        this._setState("connected");
        const reason = await link.closedPromise;
        this.link = null;
        for (const hostId of this.presence.keys()) this.presence.set(hostId, false);
        this.dispatchEvent(new CustomEvent("presence", { detail: { hostId: null, online: false } }));
        this._setState("offline", reason);
      } catch (err) {
        this._setState("offline", describeError(err));
      }
      await this._pause();
    }
  }

  // A host's heartbeat went unanswered over this link: drop it, so everything reconnects.
  stalled(reason) {
    if (this.link && !this.link.isClosed) this.link.close(reason);
  }

  watch(hostIds) {
    this._watched = new Set(hostIds);
    if (this.link && !this.link.isClosed) this.link.watch([...this._watched]);
  }

  // Resolves with a live link (waits through reconnects).
  async connected() {
    while (!this.link || this.link.isClosed) {
      await new Promise((resolve) => this.addEventListener("state", resolve, { once: true }));
    }
    return this.link;
  }

  // Retry now instead of waiting out the backoff.
  wake() {
    this._sleeper.wake();
  }

  stop() {
    this._stopped = true;
    this._sleeper.wake();
    if (this.link) this.link.close();
  }
}

export class Subscription {
  // handlers: onEvents(events) and onSnapshot({seq, sessions, last}); both may be async.
  constructor(conn, { since = 0, session = null, onEvents, onSnapshot }) {
    this.conn = conn;
    this.cursor = since;
    this.session = session;
    this.onEvents = onEvents;
    this.onSnapshot = onSnapshot;
    this.subId = null;
    this.active = true;
  }

  async _deliver(method, params) {
    if (method === "snapshot") {
      this.cursor = Math.max(this.cursor, params.seq);
      if (this.onSnapshot) await this.onSnapshot(params);
      return;
    }
    // Never hand out an event twice: a resubscription replays from the cursor.
    const fresh = (params.events || []).filter((ev) => ev.seq > this.cursor);
    if (!fresh.length) return;
    this.cursor = fresh[fresh.length - 1].seq;
    if (this.onEvents) await this.onEvents(fresh);
  }

  close() {
    this.active = false;
    this.conn._subs.delete(this);
    const peer = this.conn.peer;
    if (peer && !peer.isClosed && this.subId !== null) {
      peer.call("events.unsubscribe", { sub: this.subId }).catch(() => {});
      this.conn._bySubId.delete(this.subId);
    }
  }
}

export class HostConnection extends Reconnecting {
  constructor(host, relay, identity, { revoked = null } = {}) {
    super();
    this.host = host;
    this.relay = relay;
    this.identity = identity;
    this.peer = null;
    this.attempts = 0; // channels opened (or tried): a revoked page must stop counting
    this._subs = new Set();
    this._bySubId = new Map();
    this._nextSubId = 1;
    this._refusedBefore = ""; // the refusal a "Try again" (reopen) started from
    // The relay says the host is away (its presence, or HOST_OFFLINE), not merely that this page
    // lost its way to the relay: then the relay's mailbox stands in for it (mailbox.js).
    this.away = false;
    this._onPresence = (ev) => {
      if (ev.detail.hostId === this.host.host_id && ev.detail.online) this._sleeper.wake();
    };
    if (revoked) {
      this.state = "revoked";
      this.detail = revoked.detail || "this browser was revoked on the host";
      this._stopped = true;
      return;
    }
    relay.addEventListener("presence", this._onPresence);
    this._run();
  }

  async _run() {
    const hostId = this.host.host_id;
    while (!this._stopped) {
      let offline = false;
      try {
        const link = await this.relay.connected();
        // Presence "offline" may also mean "no longer allowed" (the relay shows a host online only
        // to devices on its allowlist, and answers their OPEN as for an offline host so that
        // strangers learn nothing), so an OPEN is still tried, once per wait.
        offline = link.presence.get(hostId) === false;
        this.away = offline;
        this._setState(offline ? "offline" : "connecting", offline ? "the host is offline; waiting for it to come back" : this.detail);
        this.attempts += 1;
        const channel = await link.open(hostId);
        const transport = await E2ETransport.initiate(channel, {
          staticKey: this.identity.staticKey,
          remoteStatic: this.host.host_static,
        });
        const peer = new RpcPeer(transport, { onNotification: (m, p) => this._onNotification(peer, m, p) });
        this.peer = peer;
        this._bySubId.clear();
        offline = false;
        this.away = false;
        this._refusedBefore = "";
        this._setState("connected");
        this._backoff.reset();
        for (const sub of this._subs) this._resubscribe(peer, sub);
        this._heartbeat(peer);
        await peer.closed;
        this.peer = null;
        if (this._stopped) break;
        throw peer.closeError;
      } catch (err) {
        this.peer = null;
        if (err instanceof ChannelClosed && REVOKED_CODES.has(err.closeCode)) {
          // Revoked (or never known) on the host: nothing this page does can change that, so it
          // stops here instead of knocking again; only a new pairing helps.
          this._setState("revoked", describeError(err));
          return;
        }
        if (!isRetryable(err)) {
          this._setState("failed", describeError(err));
          return;
        }
        if (err instanceof ChannelClosed && err.closeCode === CloseCode.HOST_OFFLINE && this._refusedBefore) {
          // A refused page that tried again: the relay cannot say "still refused" without telling
          // strangers the host is online, so nothing new was learnt; it stays refused.
          this._setState("revoked", this._refusedBefore);
          return;
        }
        if (err instanceof ChannelClosed && err.closeCode === CloseCode.HOST_OFFLINE) {
          offline = true;
          this.away = true;
          this._setState("offline", "the host is offline; waiting for it to come back");
        } else {
          this.away = false;
          this._setState("offline", describeError(err));
        }
      }
      // A host known offline is retried when its presence comes back (or after 30 s anyway).
      await this._pause(offline ? 30000 : undefined);
    }
  }

  async _heartbeat(peer) {
    while (!peer.isClosed && !this._stopped) {
      await sleep(HEARTBEAT_MS);
      if (peer.isClosed || this._stopped) return;
      const answered = await Promise.race([
        peer.call("host.ping").then(() => true, () => true), // an error is an answer too
        sleep(HEARTBEAT_TIMEOUT_MS).then(() => false),
      ]);
      if (!answered && !peer.isClosed) {
        this.relay.stalled(`no answer from ${this.host.name} for ${HEARTBEAT_TIMEOUT_MS / 1000} s; reconnecting`);
        return;
      }
    }
  }

  async _resubscribe(peer, sub) {
    const subId = this._nextSubId++;
    sub.subId = subId;
    // Registered before the call: the first batch may arrive before the response.
    this._bySubId.set(subId, sub);
    try {
      await peer.call("events.subscribe", { sub: subId, since: sub.cursor, session: sub.session });
    } catch (err) {
      this._bySubId.delete(subId);
      if (!peer.isClosed) console.warn("events.subscribe failed", err);
    }
  }

  async _onNotification(peer, method, params) {
    if (method !== "events" && method !== "snapshot") return;
    const sub = this._bySubId.get(params.sub);
    if (!sub || !sub.active) return;
    await sub._deliver(method, params);
    // Acknowledged once taken: the host sends more only as this page keeps up (api.py _Window).
    peer.notify("events.ack", { sub: params.sub }).catch(() => {});
  }

  // Resolves with a live RPC peer, or rejects once the deadline passes or the host refused us.
  async connectedPeer(deadline) {
    for (;;) {
      if (this.peer && !this.peer.isClosed) return this.peer;
      if (this.state === "failed" || this.state === "revoked") throw new TransportClosed(this.detail, { code: this.state });
      const left = deadline - Date.now();
      if (left <= 0) throw new TransportClosed(`not connected to ${this.host.name}: ${this.detail || "connecting"}`, { code: "timeout" });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.addEventListener("state", () => (clearTimeout(timer), resolve()), { once: true });
      });
    }
  }

  // Call a method, retrying through reconnects for up to retryFor ms.
  async call(method, params = {}, { retryFor = 60000 } = {}) {
    const deadline = Date.now() + retryFor;
    for (;;) {
      const peer = await this.connectedPeer(deadline);
      try {
        return await peer.call(method, params);
      } catch (err) {
        if (!isRetryable(err) || Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  // A command with a client id: retried after a reconnect, it is applied once (protocol §5.6).
  // Pass the same cid again to retry a command that failed: the host still applies it once.
  command(method, params = {}, { cid = newCid(), retryFor = 60000 } = {}) {
    return this.call(method, { ...params, cid }, { retryFor });
  }

  subscribe(options) {
    const sub = new Subscription(this, options);
    this._subs.add(sub);
    if (this.peer && !this.peer.isClosed) this._resubscribe(this.peer, sub);
    return sub;
  }

  // Try again now (after "failed", or to skip a backoff wait).
  retry() {
    if (this.state === "failed") {
      this._stopped = false;
      this._setState("connecting");
      this._run();
    } else {
      this._sleeper.wake();
    }
  }

  // Dial again after a refusal ("revoked" or "failed"), when the person asks to: only for a case
  // where something outside this page can change the answer (a linked host that had not received
  // this browser from its parent yet). Nothing calls it by itself.
  reopen() {
    if (this.state !== "revoked" && this.state !== "failed") return this.retry();
    this._refusedBefore = this.state === "revoked" ? this.detail : "";
    this._stopped = false;
    this.relay.removeEventListener("presence", this._onPresence);
    this.relay.addEventListener("presence", this._onPresence);
    this._backoff.reset();
    this._setState("connecting");
    this._run();
  }

  stop() {
    this._stopped = true;
    this.relay.removeEventListener("presence", this._onPresence);
    this._sleeper.wake();
    if (this.peer) this.peer.close();
  }
}
