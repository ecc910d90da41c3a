// Live connections, kept alive across network cuts, relay restarts and sleeping phones:
//
//   RelayConnection  one WebSocket per relay URL: admission, WATCH/PRESENCE, reconnect with backoff
//   HostConnection   one IK channel + RPC peer per paired host, over its relay's connection;
//                    calls retried across reconnects (commands carry a cid, so they apply once),
//                    event subscriptions resumed from their cursor with events.ack flow control;
//                    steered to the cluster node that holds the host when a relay node says so
//                    (REDIRECT), like client/connection.py _open_steered.
//
// Both are EventTargets: "state" events carry {state, detail} for the UI.

import { CloseCode, RETRY_CODES } from "./frames.js";

// Channel endings that mean this device may not talk to the host any more (revoked, or unknown).
export const REVOKED_CODES = new Set([CloseCode.NOT_ALLOWED, CloseCode.REVOKED]);
import { ChannelClosed, RelayError, RelayLink, websocketUrl } from "./relay.js";
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

// How long a cluster node gets to take a host's channel before the page goes back to the relay it
// paired through (client/connection.py STEER_TIMEOUT).
export const STEER_TIMEOUT_MS = 5000;

// `promise`, or a RelayError once `ms` passed.
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new RelayError(`${what} did not answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// Whether this page may dial `url` at all. The relay serves the page with connect-src 'self' (its
// one Content-Security-Policy, relay/static.py), so the browser lets it open WebSockets to its own
// origin only: ws(s) to the same host and port. A cluster node advertised at any other origin
// cannot be followed from a browser (the channel through the load balancer keeps working).
export function pageMayDial(url, origin = globalThis.location?.origin) {
  try {
    const target = new URL(websocketUrl(url));
    const page = new URL(origin);
    const scheme = { "http:": "ws:", "https:": "wss:" }[page.protocol];
    return Boolean(scheme) && target.protocol === scheme && target.host === page.host;
  } catch {
    return false;
  }
}

function sameEndpoint(a, b) {
  try {
    return websocketUrl(a) === websocketUrl(b);
  } catch {
    return false;
  }
}

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
  // relay: the RelayConnection of the relay the host was paired through (its relay_url).
  // steer: how to follow a cluster node's REDIRECT (Tether gives it; without it none is followed):
  //   relayFor(url) → the page's RelayConnection to that node; remember(url) keeps it with the host
  //   (IndexedDB node_url; "" forgets it); release(url) lets go of a node no host uses.
  constructor(host, relay, identity, { revoked = null, steer = null } = {}) {
    super();
    this.host = host;
    this.home = relay; // the relay the host was paired through
    this.relay = relay; // the one in use: home, or the cluster node that holds the host
    this._steer = steer;
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
    // The node that held the host last time (a REDIRECT remembered with it): tried first.
    if (steer && host.node_url && pageMayDial(host.node_url) && !sameEndpoint(host.node_url, relay.relayUrl)) {
      this.relay = steer.relayFor(host.node_url);
    }
    this._listen();
    this._run();
  }

  // Presence news from the relay in use, and from home (where the host is looked for when its
  // node fails).
  _listen() {
    for (const relay of new Set([this.home, this.relay])) {
      relay.removeEventListener("presence", this._onPresence);
      relay.addEventListener("presence", this._onPresence);
    }
  }

  _unlisten() {
    for (const relay of new Set([this.home, this.relay])) relay.removeEventListener("presence", this._onPresence);
  }

  _useRelay(next) {
    if (next === this.relay) return;
    if (this.relay !== this.home) this.relay.removeEventListener("presence", this._onPresence);
    this.relay = next;
    if (!this._stopped) this._listen();
  }

  // At the cluster node remembered for the host: [link, channel], or null when that failed (the
  // node is gone, or the host is offline) — then it is forgotten and home is used again. A node
  // that no longer holds the host but reaches it says where it went (REDIRECT), as home would.
  async _openAtNode(hostId) {
    const node = this.relay;
    try {
      const link = await within(node.connected(), STEER_TIMEOUT_MS, `the relay node at ${node.relayUrl}`);
      link.redirects.delete(hostId);
      const channel = await link.open(hostId, "", STEER_TIMEOUT_MS);
      return await this._follow(hostId, link, channel);
    } catch {
      if (this._stopped || this.relay !== node) return null;
      this._useRelay(this.home);
      this._steer.remember("");
      return null;
    }
  }

  // A cluster node said another node holds the host (REDIRECT, before the channel opened): the
  // channel opened here works but crosses nodes, one opened at that node does not. Followed only
  // to a URL of this page's own origin (pageMayDial: the CSP forbids the page any other, so such
  // a redirect is ignored and the channel through this node is kept); remembered when it works.
  async _follow(hostId, link, channel) {
    const url = link.redirects.get(hostId);
    if (!this._steer || !url || !pageMayDial(url) || sameEndpoint(url, this.home.relayUrl)) return [link, channel];
    const node = this._steer.relayFor(url);
    try {
      const nodeLink = await within(node.connected(), STEER_TIMEOUT_MS, `the relay node at ${url}`);
      const steered = await nodeLink.open(hostId, "", STEER_TIMEOUT_MS);
      if (this._stopped) {
        steered.close();
        return [link, channel];
      }
      channel.close(CloseCode.NORMAL, "reconnected at the node that holds the host");
      this._useRelay(node);
      this._steer.remember(url);
      return [nodeLink, steered];
    } catch {
      this._steer.release(url);
      return [link, channel];
    }
  }

  async _run() {
    const hostId = this.host.host_id;
    while (!this._stopped) {
      let offline = false;
      try {
        let opened = this.relay !== this.home ? await this._openAtNode(hostId) : null;
        if (this._stopped) {
          if (opened) opened[1].close();
          break;
        }
        if (!opened) {
          const link = await this.home.connected();
          // Presence "offline" may also mean "no longer allowed" (the relay shows a host online only
          // to devices on its allowlist, and answers their OPEN as for an offline host so that
          // strangers learn nothing), so an OPEN is still tried, once per wait.
          offline = link.presence.get(hostId) === false;
          this.away = offline;
          this._setState(offline ? "offline" : "connecting", offline ? "the host is offline; waiting for it to come back" : this.detail);
          this.attempts += 1;
          link.redirects.delete(hostId); // only what this node says of this OPEN
          const channel = await link.open(hostId);
          opened = await this._follow(hostId, link, channel);
        } else {
          this.attempts += 1;
        }
        const channel = opened[1];
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
    this._listen();
    this._backoff.reset();
    this._setState("connecting");
    this._run();
  }

  stop() {
    this._stopped = true;
    this._unlisten();
    this._sleeper.wake();
    if (this.peer) this.peer.close();
  }
}
