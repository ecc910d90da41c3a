// Application state, kept apart from the DOM so screens can be rebuilt freely:
//
//   Tether       paired hosts, one RelayConnection per relay, one HostConnection per host in use
//   HostModel    one host's sessions, kept current by a host-wide event subscription whose cursor
//                is persisted in IndexedDB (a phone that slept resumes exactly where it was)
//   SessionFeed  one session's history (pty output, or agent items and approvals) for its view
//
// All are EventTargets firing "change".

import { HostConnection, RelayConnection } from "./connection.js";
import { loadIdentity } from "./keys.js";
import { store } from "./store.js";

const emit = (target, detail = {}) => target.dispatchEvent(new CustomEvent("change", { detail }));

// Session status implied by an event (the host's projection is the truth; sessions.list on every
// connect corrects anything this approximation gets wrong).
function statusAfter(session, ev) {
  switch (ev.type) {
    case "session.started":
    case "turn.started":
      return "running";
    case "session.status":
      return ev.data.status;
    case "turn.completed":
      return "idle";
    case "approval.requested":
      return "waiting-for-approval";
    case "approval.resolved":
    case "approval.cleared":
      return session.status === "waiting-for-approval" ? "running" : session.status;
    case "session.exited":
      return ev.data.exit_code === 0 ? "finished" : "failed";
    default:
      return session.status;
  }
}

export class HostModel extends EventTarget {
  constructor(conn) {
    super();
    this.conn = conn;
    this.hostId = conn.host.host_id;
    this.sessions = new Map();
    this.info = null;
    this.sub = null;
    this._saving = Promise.resolve();
    conn.addEventListener("state", (ev) => {
      if (ev.detail.state === "connected") this.refresh();
    });
  }

  async start() {
    const saved = await store.getCursor(this.hostId);
    for (const s of saved?.sessions || []) this.sessions.set(s.id, s);
    if (this.sessions.size) emit(this);
    let since = saved?.cursor;
    if (since === undefined) {
      // First connection: what exists now comes from sessions.list; follow from the head.
      // (Retried for as long as it takes: the host may be offline for a while.)
      this.info = await this.conn.call("host.info", {}, { retryFor: 365 * 86400 * 1000 });
      since = this.info.head;
    }
    this.sub = this.conn.subscribe({
      since,
      onEvents: (events) => this._apply(events),
      onSnapshot: (snap) => this._snapshot(snap),
    });
    if (this.conn.state === "connected") await this.refresh();
  }

  async refresh() {
    try {
      const [info, list] = await Promise.all([this.conn.call("host.info"), this.conn.call("sessions.list")]);
      this.info = info;
      this.sessions = new Map(list.map((s) => [s.id, s]));
      emit(this);
      this._save();
    } catch (err) {
      console.warn("refresh failed", err);
    }
  }

  _apply(events) {
    for (const ev of events) {
      if (!ev.session) continue;
      let s = this.sessions.get(ev.session);
      if (!s && ev.type === "session.started") {
        s = { id: ev.session, ...ev.data, status: "running", created: ev.ts, exit_code: null };
        this.sessions.set(ev.session, s);
      }
      if (!s) continue;
      s.status = statusAfter(s, ev);
      s.last_activity = ev.ts;
      s.last_seq = ev.seq;
      if (ev.type === "session.exited") Object.assign(s, { exit_code: ev.data.exit_code, exit_reason: ev.data.reason });
    }
    emit(this, { events });
    return this._save();
  }

  _snapshot(snap) {
    // A snapshot may come in several parts sharing one seq; the first part replaces the list.
    if (snap.seq !== this._snapshotSeq) this.sessions = new Map();
    this._snapshotSeq = snap.seq;
    for (const s of snap.sessions) {
      const { scrollback, ...summary } = s; // scrollback belongs to the session view, not the list
      this.sessions.set(s.id, summary);
    }
    emit(this);
    return this._save();
  }

  // Cursor and sessions in one write, after the events were applied: never ahead of the state.
  _save() {
    const record = { host_id: this.hostId, cursor: this.sub ? this.sub.cursor : 0, sessions: [...this.sessions.values()] };
    this._saving = this._saving.then(() => store.putCursor(record)).catch((err) => console.warn("saving the cursor failed", err));
    return this._saving;
  }

  sortedSessions() {
    return [...this.sessions.values()].sort((a, b) => (b.last_activity || b.created || 0) - (a.last_activity || a.created || 0));
  }
}

// How much terminal text a view keeps (older output scrolls away, like a terminal's scrollback).
const MAX_OUTPUT_CHARS = 256 * 1024;

export class SessionFeed extends EventTarget {
  constructor(conn, sessionId) {
    super();
    this.conn = conn;
    this.sessionId = sessionId;
    this.session = null;
    this.output = ""; // pty: terminal text as received (escape sequences included)
    this.items = new Map(); // agent: item id → {id, kind, text, output, ...}
    this.order = []; // agent: card order (item ids and approval ids)
    this.approvals = new Map(); // approval id → {approval, kind, details, options, resolved, by}
    this.sub = null;
  }

  start() {
    this.conn
      .call("sessions.get", { id: this.sessionId })
      .then((s) => {
        this.session = { ...(this.session || {}), ...s };
        emit(this, { kind: "session" });
      })
      .catch((err) => emit(this, { kind: "error", error: err }));
    this.sub = this.conn.subscribe({
      since: 0,
      session: this.sessionId,
      onEvents: (events) => this._apply(events),
      onSnapshot: (snap) => this._snapshot(snap),
    });
  }

  stop() {
    if (this.sub) this.sub.close();
  }

  _appendOutput(text) {
    this.output += text;
    if (this.output.length > MAX_OUTPUT_CHARS) this.output = this.output.slice(-MAX_OUTPUT_CHARS);
  }

  _item(id, init = {}) {
    let item = this.items.get(id);
    if (!item) {
      item = { id, kind: "agent_message", text: "", output: "", status: "running", ...init };
      this.items.set(id, item);
      this.order.push(id);
    }
    return item;
  }

  _apply(events) {
    const s = this.session || (this.session = { id: this.sessionId, status: "running" });
    for (const ev of events) {
      const d = ev.data || {};
      s.status = statusAfter(s, ev);
      switch (ev.type) {
        case "session.started":
          Object.assign(s, d);
          break;
        case "session.output":
          this._appendOutput(d.data || "");
          break;
        case "session.exited":
          Object.assign(s, { exit_code: d.exit_code, exit_reason: d.reason });
          break;
        case "turn.started":
          if (d.input) {
            const id = `turn:${d.turn}`;
            this._item(id, { kind: "user_message", text: d.input, status: "completed" });
          }
          break;
        case "item.started": {
          const { turn, item, kind, ...rest } = d;
          const it = this._item(item, { kind });
          Object.assign(it, rest, { kind });
          // The turn's prompt is already shown from turn.started.
          if (kind === "user_message" && this.items.has(`turn:${turn}`)) it.hidden = true;
          break;
        }
        case "item.delta": {
          const it = this._item(d.item);
          if (d.stream === "output") it.output += d.data;
          else it.text += d.data;
          break;
        }
        case "item.completed": {
          const it = this._item(d.item, { kind: d.kind });
          const { item, ...rest } = d;
          Object.assign(it, rest);
          break;
        }
        case "approval.requested":
          this.approvals.set(d.approval, { ...d, resolved: null });
          this.order.push(`approval:${d.approval}`);
          break;
        case "approval.resolved": {
          const ap = this.approvals.get(d.approval);
          if (ap) Object.assign(ap, { resolved: d.decision, by: d.by });
          break;
        }
        case "approval.cleared": {
          const ap = this.approvals.get(d.approval);
          if (ap) Object.assign(ap, { resolved: "cleared", reason: d.reason });
          break;
        }
      }
    }
    emit(this, { kind: "events", events });
  }

  _snapshot(snap) {
    const s = snap.sessions.find((x) => x.id === this.sessionId);
    if (!s) return;
    this.session = { ...s };
    this.output = "";
    this._appendOutput(s.scrollback || "");
    for (const ap of s.approvals || []) {
      if (!this.approvals.has(ap.approval)) {
        this.approvals.set(ap.approval, { ...ap, resolved: null });
        this.order.push(`approval:${ap.approval}`);
      }
    }
    emit(this, { kind: "snapshot" });
  }

  send(text) {
    return this.conn.command("sessions.send", { id: this.sessionId, text });
  }

  interrupt() {
    return this.conn.command("sessions.interrupt", { id: this.sessionId });
  }

  approve(approval, decision) {
    return this.conn.command("sessions.approve", { id: this.sessionId, approval, decision });
  }
}

export class Tether extends EventTarget {
  constructor() {
    super();
    this.identity = null;
    this.hosts = [];
    this.relays = new Map();
    this.conns = new Map();
    this.models = new Map();
  }

  async load() {
    this.identity = await loadIdentity();
    this.hosts = await store.listHosts();
    this.hosts.sort((a, b) => a.name.localeCompare(b.name));
    if (this.identity) this._watchAll();
    emit(this);
  }

  relay(url) {
    let relay = this.relays.get(url);
    if (!relay) {
      relay = new RelayConnection(url, this.identity);
      relay.addEventListener("presence", () => emit(this, { kind: "presence" }));
      relay.addEventListener("state", () => emit(this, { kind: "relay" }));
      this.relays.set(url, relay);
    }
    return relay;
  }

  _watchAll() {
    const byRelay = new Map();
    for (const h of this.hosts) {
      if (!byRelay.has(h.relay_url)) byRelay.set(h.relay_url, []);
      byRelay.get(h.relay_url).push(h.host_id);
    }
    for (const [url, ids] of byRelay) this.relay(url).watch(ids);
  }

  online(host) {
    const relay = this.relays.get(host.relay_url);
    return Boolean(relay && relay.state === "connected" && relay.presence.get(host.host_id));
  }

  connection(hostId) {
    let conn = this.conns.get(hostId);
    if (!conn) {
      const host = this.hosts.find((h) => h.host_id === hostId);
      if (!host) return null;
      conn = new HostConnection(host, this.relay(host.relay_url), this.identity);
      this.conns.set(hostId, conn);
    }
    return conn;
  }

  model(hostId) {
    let model = this.models.get(hostId);
    if (!model) {
      const conn = this.connection(hostId);
      if (!conn) return null;
      model = new HostModel(conn);
      this.models.set(hostId, model);
      model.start().catch((err) => console.warn("host model failed to start", err));
    }
    return model;
  }

  // After a pairing: reload the hosts and watch the new one.
  async added() {
    await this.load();
  }

  async forget(hostId) {
    const conn = this.conns.get(hostId);
    if (conn) conn.stop();
    this.conns.delete(hostId);
    this.models.delete(hostId);
    await store.deleteHost(hostId);
    await this.load();
  }

  // Network back or page visible again: skip the backoff waits.
  wake() {
    for (const relay of this.relays.values()) relay.wake();
    for (const conn of this.conns.values()) conn.retry();
  }
}
