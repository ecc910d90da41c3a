// Application state, kept apart from the DOM so screens can be rebuilt freely:
//
//   Tether       paired hosts (and hosts linked to them, see linked.js), one RelayConnection per
//                relay (and per cluster node a host was steered to: its node_url), one
//                HostConnection per host in use; every directly paired host is kept connected, so
//                what it announces (hosts linked, and unlinked) arrives while the page is open
//   HostModel    one host's sessions, kept current by a host-wide event subscription whose cursor
//                is persisted in IndexedDB (a phone that slept resumes exactly where it was)
//   SessionFeed  one session's history (pty output, or agent items and approvals) for its view
//
// While the relay says a host is away, its HostModel reads what the host left this browser in the
// relay's mailbox (mailbox.js) and the screens show that — apart from the live state: nothing of
// it moves the persisted event cursor, and the live state replaces it once the host is back. What
// is typed meanwhile (a prompt, an approval, an answer) is queued there for the host.
//
// All are EventTargets firing "change"; Tether also fires "model" with each new HostModel
// (notify.js follows their events).

import { HostConnection, RelayConnection, newCid, pageMayDial } from "./connection.js";
import { loadIdentity } from "./keys.js";
import { parseAnnouncement, planLinked } from "./linked.js";
import { Mailbox } from "./mailbox.js";
import { CloseCode } from "./frames.js";
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
    this.started = false;
    this._saving = Promise.resolve();
    this.mailbox = new Mailbox(conn);
    // What the host left at the relay, while it is away (null while it is not):
    //   {state: "reading"} → {state: "shown", snapshot, depositedAt} | {state: "none"}
    //                      | {state: "failed", error, at}
    // Kept apart from this.sessions, which (with the cursor) is only ever what the host said live.
    this.away = null;
    this._reading = false;
    conn.addEventListener("state", (ev) => {
      if (ev.detail.state === "connected") this.refresh();
      else this.readAway();
    });
    this.readAway();
  }

  // Read what the host left at the relay, once per absence (a failed read again after 30 s,
  // unless the relay keeps no mailbox).
  async readAway() {
    if (!this.conn.away || this._reading) return;
    const last = this.away;
    if (last && (last.state !== "failed" || Date.now() - last.at < 30000 || last.error?.closeCode === CloseCode.MAILBOX_OFF)) return;
    this._reading = true;
    if (!last) {
      this.away = { state: "reading" };
      emit(this, { kind: "away" });
    }
    let away;
    try {
      const held = await this.mailbox.read();
      away = held ? { state: "shown", ...held } : { state: "none" };
    } catch (err) {
      away = { state: "failed", error: err, at: Date.now() };
    } finally {
      this._reading = false;
    }
    // Back meanwhile: the live state wins.
    if (this.conn.state === "connected") return;
    this.away = away;
    emit(this, { kind: "away" });
  }

  // The sessions the screens show: what the host left at the relay while it is away, else what it
  // said live (or, until it does, what this browser remembers of it).
  shownSessions() {
    if (this.away?.state !== "shown") return this.sessions;
    return new Map(this.away.snapshot.sessions.map((s) => [s.id, s]));
  }

  // The last known sessions, from IndexedDB (shown at once, and all a revoked host still has).
  async load() {
    const saved = await store.getCursor(this.hostId);
    for (const s of saved?.sessions || []) if (!this.sessions.has(s.id)) this.sessions.set(s.id, s);
    if (this.sessions.size) emit(this);
    return saved;
  }

  async start() {
    this.started = true;
    const saved = await this.load();
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
      this.away = null; // back: the live state replaces what it left at the relay
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
      if (ev.type === "session.archived") s.archived = Boolean(ev.data.archived);
      if (ev.type === "session.deleted") this.sessions.delete(ev.session);
    }
    // Items this browser queued at the relay leave its outbox once their events show.
    this.mailbox.settle(events).catch((err) => console.warn("settling the outbox failed", err));
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

  // Waiting for a person first, then live ones, then ended; most recent activity first in each.
  // A session put away (or back), or forgotten with its history (ended sessions only).
  archive(sessionId, archived = true) {
    return this.conn.command("sessions.archive", { id: sessionId, archived });
  }

  delete(sessionId) {
    return this.conn.command("sessions.delete", { id: sessionId });
  }

  sortedSessions() {
    const rank = (s) => ({ "waiting-for-approval": 0, running: 1, idle: 2 })[s.status] ?? 3;
    const recent = (s) => s.last_activity || s.created || 0;
    return [...this.shownSessions().values()].sort((a, b) => rank(a) - rank(b) || recent(b) - recent(a));
  }
}

// How much raw terminal output a view keeps for a terminal mounted late (xterm keeps its own
// scrollback once mounted).
const MAX_OUTPUT_CHARS = 256 * 1024;

// A session that waits for a person's approval: counted on the Hosts screen, in the title and by
// the host screen's banner and filter alike — archived or not, it holds its agent up.
export function waitsForMe(session) {
  return session.status === "waiting-for-approval";
}

// What a prompt sent from this page went through (protocol §5.6):
//   sending    the request is on its way (or being retried through a reconnect, same cid)
//   delivered  the host answered: it is in the log
//   applied    its event (carrying our cid) came back in the stream
//   failed     the host or the relay refused it, or the retries ran out; retry() resends the same cid
// and, typed while the host was away (the relay's mailbox):
//   queueing   being sealed and left at the relay
//   held       the relay holds it; the host takes it when it is back (then: applied, or refused)
//   refused    the host would not apply it when it came back (mailbox.refused says why)
// (A prompt the *host* holds until the agent is done is "queued": turn.queued.)
export const PROMPT_STATES = ["sending", "delivered", "applied", "failed", "queueing", "held", "refused"];

// What a device's queued request was, in a sentence ("prompt", "approval", "answer").
const QUEUED_WHAT = { "sessions.send": "prompt", "sessions.approve": "approval", "sessions.answer": "answer" };

export class SessionFeed extends EventTarget {
  // mailbox: the host's Mailbox (what is typed while the host is away is queued there);
  // hostName: what the page calls the host ("sent when <host> is back").
  constructor(conn, sessionId, { known = null, mailbox = null, hostName = null } = {}) {
    super();
    this.conn = conn;
    this.sessionId = sessionId;
    this.mailbox = mailbox;
    this.hostName = hostName || conn.host?.name || "the host";
    this.session = known ? { ...known } : null;
    this.output = ""; // pty: terminal text as received (escape sequences included)
    this.outputSeq = 0; // seq of the last output taken (a view mounted later starts from here)
    this.items = new Map(); // agent: item id → {id, kind, text, output, ...}
    this.order = []; // agent: card order (item ids, "turn:<id>" prompts, "approval:<id>")
    this.approvals = new Map(); // approval id → {approval, kind, details, options, resolved, by}
    this.approvalByItem = new Map(); // item id → approval id (the approval card shows its diff)
    this.prompts = new Map(); // cid → {cid, text, state, error}
    this.turnByCid = new Map(); // cid → turn item key
    // Items the agent states whole each time, so the latest replaces the last: the plan (one per
    // session), and the changes of each turn. Slot ("plan", "changes:<turn>") → item id.
    this.latest = new Map();
    this.answering = new Map(); // approval id → the decision on its way to the host
    this.queued = new Map(); // queued prompt id → {id, text, cid}: sent while the agent worked
    // Answers to approvals queued at the relay: approval id → {cid, decision, state, error}
    // (state: queueing, held, refused or failed, as a prompt's).
    this.queuedAnswers = new Map();
    this.sub = null;
    this.live = false; // the host has said something about this session since the view opened
    this.fromSnapshot = false; // what is shown came from what the host left at the relay
    this.stopped = false;
    this._seenCids = new Set();
  }

  start() {
    this._load();
    this.sub = this.conn.subscribe({
      since: 0,
      session: this.sessionId,
      onEvents: (events) => (this._goLive(), this._apply(events)),
      onSnapshot: (snap) => (this._goLive(), this._snapshot(snap)),
    });
    // What this browser queued at the relay for this session and the host did not take yet.
    if (this.mailbox) {
      this.mailbox.outbox(this.sessionId).then((entries) => {
        for (const entry of entries) this._fromOutbox(entry);
        const answers = entries.filter((e) => e.approval).map((e) => `approval:${e.approval}`);
        if (entries.length) emit(this, { kind: "events", events: [], changed: new Set(answers) });
      }).catch((err) => console.warn("reading the outbox failed", err));
    }
  }

  // The session's state; while the host is away this waits for it (the view shows meanwhile what
  // the host left at the relay).
  async _load() {
    while (!this.stopped) {
      try {
        const s = await this.conn.call("sessions.get", { id: this.sessionId });
        if (this.stopped) return;
        this._goLive();
        const { approvals, ...rest } = s;
        this.session = { ...(this.session || {}), ...rest };
        for (const ap of approvals || []) this._addApproval(ap);
        emit(this, { kind: "session" });
        return;
      } catch (err) {
        if (this.stopped) return;
        if (err.code === "timeout" && this.conn.away) continue;
        emit(this, { kind: "error", error: err });
        return;
      }
    }
  }

  stop() {
    this.stopped = true;
    if (this.sub) this.sub.close();
  }

  // Whatever is typed now waits at the relay: the relay says the host is away.
  get queueing() {
    return Boolean(this.mailbox) && this.conn.away && this.conn.state !== "connected";
  }

  // What the host left at the relay for this session ({session row with its pending approvals},
  // its latest events): shown like live events until the host says anything itself. Nothing of
  // it reaches a cursor (this feed's subscription counts only what the host sends).
  showSnapshot(row, events) {
    if (this.live || !row) return;
    this._clear();
    this.fromSnapshot = true;
    const { approvals, ...rest } = row;
    this.session = { ...rest };
    this._apply(events || [], { quiet: true });
    // The row is the truth about the status: a few latest events may not tell it.
    this.session.status = rest.status;
    for (const ap of approvals || []) this._addApproval(ap);
    emit(this, { kind: "reset" });
  }

  // The host speaks: what came from the snapshot goes, the live history replaces it.
  _goLive() {
    if (this.live) return;
    this.live = true;
    if (!this.fromSnapshot) return;
    this.fromSnapshot = false;
    this._clear();
    emit(this, { kind: "reset" });
  }

  // Everything but what this page sent (its prompts and queued answers keep their states).
  _clear() {
    this.output = "";
    this.outputSeq = 0;
    this.items = new Map();
    this.order = [];
    this.approvals = new Map();
    this.approvalByItem = new Map();
    this.turnByCid = new Map();
    this.latest = new Map();
    this.queued = new Map();
  }

  _fromOutbox(entry) {
    if (this._seenCids.has(entry.cid)) return;
    if (entry.method === "sessions.send") {
      if (!this.prompts.has(entry.cid)) {
        this.prompts.set(entry.cid, {
          cid: entry.cid, text: entry.text || "", images: [], state: "held", error: null, at: entry.queued_at * 1000,
        });
      }
    } else if (entry.approval && !this.queuedAnswers.has(entry.approval)) {
      this.queuedAnswers.set(entry.approval, { cid: entry.cid, decision: entry.decision, state: "held", error: null });
    }
  }

  get isPty() {
    return (this.session?.agent || "pty") === "pty";
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

  _latestOf(kind, turn, id, changed) {
    const slot = kind === "plan" ? "plan" : kind === "changes" ? `changes:${turn}` : null;
    if (!slot) return;
    const last = this.items.get(this.latest.get(slot));
    if (last && last.id !== id) {
      last.hidden = true;
      changed.add(last.id);
    }
    this.latest.set(slot, id);
  }

  // An approval's card goes right before its item's card when that is already shown (Codex and
  // the builtin agent start the item, then ask): the question reads before what came of it.
  _addApproval(d) {
    if (this.approvals.has(d.approval)) return;
    this.approvals.set(d.approval, { ...d, resolved: null });
    if (d.item) this.approvalByItem.set(d.item, d.approval);
    const at = d.item ? this.order.indexOf(d.item) : -1;
    if (at >= 0) this.order.splice(at, 0, `approval:${d.approval}`);
    else this.order.push(`approval:${d.approval}`);
  }

  // The approval an item waits for, while nobody has answered it.
  pendingApproval(itemId) {
    const ap = this.approvals.get(this.approvalByItem.get(itemId));
    return ap && !ap.resolved ? ap : null;
  }

  _apply(events, { quiet = false } = {}) {
    const s = this.session || (this.session = { id: this.sessionId, status: "running" });
    const changed = new Set();
    let output = "";
    for (const ev of events) {
      const d = ev.data || {};
      s.status = statusAfter(s, ev);
      s.last_activity = ev.ts;
      const refusal = ev.type === "mailbox.refused";
      if (ev.cid) this._seenCids.add(ev.cid);
      if (ev.cid && this.prompts.has(ev.cid)) {
        const p = this.prompts.get(ev.cid);
        if (refusal) Object.assign(p, { state: "refused", error: new Error(d.message || "refused by the host"), seq: ev.seq });
        // Queued by the host (it starts when the agent is done), or started.
        else Object.assign(p, { state: ev.type === "turn.queued" ? "queued" : "applied", error: null, seq: ev.seq });
        changed.add(`prompt:${ev.cid}`);
      }
      if (ev.cid) {
        for (const [approval, q] of this.queuedAnswers) {
          if (q.cid !== ev.cid) continue;
          // Applied (its approval.resolved carries the cid): the card shows the host's word.
          if (refusal) Object.assign(q, { state: "refused", error: new Error(d.message || "refused by the host") });
          else this.queuedAnswers.delete(approval);
          changed.add(`approval:${approval}`);
        }
      }
      // Any sign of the turn going on (or ending) ends its "reconnecting" state.
      if (s.retrying && (ev.type.startsWith("item.") || ev.type.startsWith("approval.") || ev.type === "turn.completed")) {
        const key = `retry:${s.retrying.turn}`;
        // A failed turn logs its error item first, then turn.completed.
        const failed = (ev.type === "turn.completed" && d.status === "failed") ||
          (ev.type === "item.completed" && d.kind === "error");
        if (this.items.has(key)) this.items.get(key).status = failed ? "failed" : "completed";
        s.retrying = null;
        changed.add(key);
      }
      switch (ev.type) {
        case "session.started":
          Object.assign(s, d);
          break;
        case "turn.retrying": {
          const key = `retry:${d.turn}`;
          const it = this._item(key, { kind: "retrying" });
          Object.assign(it, { attempt: d.attempt, text: d.message || "", details: d.details || "", status: "running" });
          s.retrying = { turn: d.turn, attempt: d.attempt, message: d.message || "" };
          changed.add(key);
          break;
        }
        case "agent.usage": {
          // Merged: each report names only what it knows.
          const known = Object.fromEntries(Object.entries(d).filter(([k, v]) => k !== "turn" && v !== null));
          s.usage = { ...(s.usage || {}), ...known };
          break;
        }
        case "agent.notice": {
          const key = `notice:${ev.seq}`;
          this._item(key, { kind: "notice", level: d.level, source: d.source, text: d.message || "", status: "completed" });
          changed.add(key);
          break;
        }
        case "session.output":
          this._appendOutput(d.data || "");
          output += d.data || "";
          this.outputSeq = ev.seq;
          break;
        case "session.resized":
          Object.assign(s, { cols: d.cols, rows: d.rows });
          break;
        case "session.exited":
          Object.assign(s, { exit_code: d.exit_code, exit_reason: d.reason });
          break;
        case "session.archived":
          s.archived = Boolean(d.archived);
          break;
        case "turn.queued":
          this.queued.set(d.queued, { id: d.queued, text: d.input || "", cid: ev.cid || null });
          changed.add(`queued:${d.queued}`);
          break;
        case "turn.unqueued":
          this.queued.delete(d.queued);
          changed.add(`queued:${d.queued}`);
          break;
        case "turn.started": {
          if (d.queued) this.queued.delete(d.queued);
          const key = `turn:${d.turn}`;
          this._item(key, {
            kind: "user_message", text: d.input || "", status: "completed", cid: ev.cid || null,
            model: d.model || null, effort: d.effort || null, images: d.images || [],
          });
          if (ev.cid) this.turnByCid.set(ev.cid, key);
          changed.add(key);
          break;
        }
        case "turn.completed": {
          if (d.status && d.status !== "completed") {
            const key = `turnend:${d.turn}`;
            this._item(key, { kind: "turn_end", status: d.status, text: d.error || "" });
            changed.add(key);
          }
          break;
        }
        case "item.started": {
          const { turn, item, kind, ...rest } = d;
          const it = this._item(item, { kind });
          Object.assign(it, rest, { kind });
          // The turn's prompt is already shown from turn.started.
          if (kind === "user_message" && this.items.has(`turn:${turn}`)) it.hidden = true;
          this._latestOf(kind, turn, item, changed);
          changed.add(item);
          break;
        }
        case "item.delta": {
          const it = this._item(d.item);
          if (d.stream === "output") it.output += d.data;
          else it.text += d.data;
          changed.add(d.item);
          break;
        }
        case "item.completed": {
          const { item, turn, ...rest } = d;
          const it = this._item(item, { kind: d.kind });
          // The final text replaces the streamed one (they are equal when nothing was lost).
          Object.assign(it, rest);
          if (d.kind === "user_message" && this.items.has(`turn:${turn}`)) it.hidden = true;
          this._latestOf(d.kind, turn, item, changed);
          changed.add(item);
          break;
        }
        case "approval.requested":
          this._addApproval(d);
          changed.add(`approval:${d.approval}`);
          if (d.item) changed.add(d.item);
          break;
        case "approval.resolved": {
          const ap = this.approvals.get(d.approval);
          if (ap) Object.assign(ap, { resolved: d.decision, by: d.by, answers: d.answers || null });
          changed.add(`approval:${d.approval}`);
          if (ap?.item) changed.add(ap.item); // its item's card shows again, with the outcome
          break;
        }
        case "approval.cleared": {
          const ap = this.approvals.get(d.approval);
          if (ap) Object.assign(ap, { resolved: "cleared", reason: d.reason });
          changed.add(`approval:${d.approval}`);
          if (ap?.item) changed.add(ap.item);
          break;
        }
        case "mailbox.refused": {
          // Said to everyone who sees the session: someone's queued request did not go through.
          const key = `refused:${ev.seq}`;
          const who = d.by?.name || d.by?.id || "a device";
          const what = QUEUED_WHAT[d.method] || d.method;
          this._item(key, {
            kind: "notice", level: "warning", source: "mailbox", status: "completed", cid: ev.cid || null,
            text: `${who}'s ${what}, queued at the relay while the host was away, was not applied: ${d.message}`,
          });
          changed.add(key);
          break;
        }
      }
    }
    if (quiet) return;
    if (output) emit(this, { kind: "output", data: output });
    emit(this, { kind: "events", events, changed });
  }

  _snapshot(snap) {
    const s = snap.sessions.find((x) => x.id === this.sessionId);
    if (!s) return;
    const { scrollback, approvals, ...rest } = s;
    this.session = { ...(this.session || {}), ...rest };
    this.output = "";
    this._appendOutput(scrollback || "");
    this.outputSeq = snap.seq;
    for (const ap of approvals || []) this._addApproval(ap);
    emit(this, { kind: "reset" });
  }

  // Keystrokes for a terminal, in order: while one send is in flight the next keys are gathered
  // and go together, so a fast typist costs few requests and nothing overtakes anything.
  type(data) {
    this._typed = (this._typed || "") + data;
    if (!this._typing) this._typing = this._flushTyped();
    return this._typing;
  }

  async _flushTyped() {
    try {
      while (this._typed) {
        const text = this._typed;
        this._typed = "";
        await this.conn.command("sessions.send", { id: this.sessionId, text });
      }
    } catch (err) {
      this._typed = "";
      emit(this, { kind: "error", error: err });
    } finally {
      this._typing = null;
    }
  }

  // A prompt (agent) or a line (pty), tracked through PROMPT_STATES.
  // images: [{name, mime, data (base64)}] for this prompt only (ui/attach.js makes them).
  // While the host is away it is queued at the relay instead (and so is one whose retries ran out
  // because the host went away meanwhile): the same cid either way, so the host applies it once.
  send(text, { cid = newCid(), images = [] } = {}) {
    const prompt = this.prompts.get(cid) || { cid, text, images, state: "sending", error: null, at: Date.now() };
    if (prompt.state === "applied") return Promise.resolve(prompt);
    this.prompts.set(cid, prompt);
    // The model, effort and mode chosen in the composer go with each prompt (the agent keeps them).
    const chosen = Object.fromEntries(Object.entries(this.turnSettings || {}).filter(([, v]) => v));
    const attached = prompt.images.length ? { images: prompt.images } : {};
    const params = { id: this.sessionId, text, ...chosen, ...attached };
    if (this.queueing) return this._queuePrompt(prompt, params);
    Object.assign(prompt, { state: "sending", error: null });
    emit(this, { kind: "prompt", cid });
    return this.conn.command("sessions.send", params, { cid }).then(
      (result) => {
        if (prompt.state !== "applied") prompt.state = "delivered";
        prompt.seq = result?.seq;
        emit(this, { kind: "prompt", cid });
        return prompt;
      },
      (err) => {
        if (err.code === "timeout" && this.queueing && prompt.state === "sending") return this._queuePrompt(prompt, params);
        if (prompt.state !== "applied") Object.assign(prompt, { state: "failed", error: err });
        emit(this, { kind: "prompt", cid });
        return prompt;
      },
    );
  }

  async _queuePrompt(prompt, params) {
    const { cid } = prompt;
    Object.assign(prompt, { state: "queueing", error: null });
    emit(this, { kind: "prompt", cid });
    try {
      await this.mailbox.queue("sessions.send", { ...params, cid }, { text: prompt.text });
      if (prompt.state === "queueing") prompt.state = "held";
    } catch (err) {
      if (prompt.state === "queueing") Object.assign(prompt, { state: "failed", error: err });
    }
    emit(this, { kind: "prompt", cid });
    return prompt;
  }

  retry(cid) {
    const prompt = this.prompts.get(cid);
    return prompt ? this.send(prompt.text, { cid }) : Promise.resolve(null);
  }

  // A queued prompt cancelled before it starts.
  unqueue(queued) {
    return this.conn.command("sessions.unqueue", { id: this.sessionId, queued });
  }

  // Turns that are not prompts: a review of the uncommitted changes, or compacting the context.
  review() {
    return this.conn.command("sessions.review", { id: this.sessionId });
  }

  compact() {
    return this.conn.command("sessions.compact", { id: this.sessionId });
  }

  // The models the agent offers for the next turns ([{id, name, efforts, default_effort, default}]).
  async models() {
    if (!this._models) this._models = this.conn.call("sessions.models", { id: this.sessionId }, { retryFor: 15000 });
    try {
      return (await this._models).models;
    } catch (err) {
      this._models = null;
      throw err;
    }
  }

  interrupt() {
    return this.conn.command("sessions.interrupt", { id: this.sessionId });
  }

  resize(cols, rows) {
    return this.conn.call("sessions.resize", { id: this.sessionId, cols, rows }, { retryFor: 5000 });
  }

  // An answer on its way: the card says what was chosen, and, while the host cannot be reached,
  // that it will be sent when connected (the command retries through reconnects). Settled by the
  // host's approval.resolved, or by an error the card shows.
  // While the host is away the answer is queued at the relay (queuedAnswers says how far it got).
  approve(approval, decision) {
    const params = { id: this.sessionId, approval, decision };
    if (this.queueing) return this._queueAnswer("sessions.approve", params, decision);
    return this._answering(approval, decision, () => this.conn.command("sessions.approve", params));
  }

  // A question of the agent answered: question id → [answers].
  answer(approval, answers) {
    const params = { id: this.sessionId, approval, answers };
    if (this.queueing) return this._queueAnswer("sessions.answer", params, "answered");
    return this._answering(approval, "answered", () => this.conn.command("sessions.answer", params));
  }

  async _queueAnswer(method, params, decision) {
    const { approval } = params;
    const queued = { cid: newCid(), decision, state: "queueing", error: null };
    this.queuedAnswers.set(approval, queued);
    const changed = () => emit(this, { kind: "events", events: [], changed: new Set([`approval:${approval}`]) });
    changed();
    try {
      await this.mailbox.queue(method, { ...params, cid: queued.cid }, { approval, decision });
      if (queued.state === "queueing") queued.state = "held";
    } catch (err) {
      Object.assign(queued, { state: "failed", error: err });
      throw err;
    } finally {
      changed();
    }
    return queued;
  }

  async _answering(approval, decision, send) {
    this.queuedAnswers.delete(approval); // answered again, live: what the relay said of it is past
    this.answering.set(approval, decision);
    emit(this, { kind: "events", events: [], changed: new Set([`approval:${approval}`]) });
    try {
      return await send();
    } finally {
      this.answering.delete(approval);
      emit(this, { kind: "events", events: [], changed: new Set([`approval:${approval}`]) });
    }
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
    this._seenSaved = new Map();
    this._learning = Promise.resolve();
    this._tick = 0; // counts the changes to learned entries (see learnLinked)
    this._touched = new Map(); // host id → this._tick when its entry was last added or updated
    this.notice = null; // {hostId, text}: a host this page dropped on its parent's word
  }

  async load() {
    this.identity = await loadIdentity();
    this.hosts = await store.listHosts();
    this.hosts.sort((a, b) => a.name.localeCompare(b.name));
    if (this.identity) {
      this._watchAll();
      // Hosts paired directly stay connected (host-wide subscription): they announce the hosts
      // they link. Linked hosts connect when opened.
      for (const h of this.hosts) if (!h.revoked && !h.linked) this.model(h.host_id);
    }
    emit(this);
  }

  // The host a linked host was learned from (null for a host paired directly, or one forgotten).
  parentOf(host) {
    return host?.linked ? this.host(host.linked.via) : null;
  }

  // What to call the host a linked host was learned from ("via <name>").
  viaName(host) {
    if (!host?.linked) return null;
    return this.parentOf(host)?.name || host.linked.via_name || host.linked.via;
  }

  host(hostId) {
    return this.hosts.find((h) => h.host_id === hostId) || null;
  }

  // The relay a host is reached through: the cluster node that held it last (node_url, from a
  // relay node's REDIRECT: HostConnection follows it and keeps it, like hosts.json's node_url for
  // the CLI), else the relay it was paired through. Its presence is the one that counts: a
  // cluster node knows the presence of the hosts connected to it alone.
  relayUrlOf(host) {
    return host.node_url && pageMayDial(host.node_url) ? host.node_url : host.relay_url;
  }

  relay(url) {
    let relay = this.relays.get(url);
    if (!relay) {
      relay = new RelayConnection(url, this.identity);
      relay.addEventListener("presence", (ev) => {
        const { hostId, online } = ev.detail;
        const host = hostId ? this.host(hostId) : null;
        // (What another relay says of a host steered elsewhere, or of the hosts it never held.)
        if (!hostId || !host || this.relayUrlOf(host) === url) this._seen(hostId, online, url);
        emit(this, { kind: "presence" });
      });
      relay.addEventListener("state", () => emit(this, { kind: "relay" }));
      this.relays.set(url, relay);
    }
    return relay;
  }

  // "Last seen": now while online, and the moment it went away; saved at most once a minute.
  // (hostId null: the relay at `url` was lost, so each host reached through it.)
  _seen(hostId, online, url) {
    const ids = hostId ? [hostId] : this.hosts.filter((h) => this.relayUrlOf(h) === url).map((h) => h.host_id);
    for (const id of ids) {
      const host = this.host(id);
      if (!host || host.revoked) continue;
      const wasOnline = this._online?.get(id);
      (this._online ||= new Map()).set(id, online);
      if (!online && !wasOnline) continue;
      host.last_seen = Date.now() / 1000;
      const saved = this._seenSaved.get(id) || 0;
      if (!online || host.last_seen - saved > 60) {
        this._seenSaved.set(id, host.last_seen);
        store.putHost(host).catch(() => {});
      }
    }
  }

  _watchAll() {
    const byRelay = new Map();
    for (const h of this.hosts) {
      if (h.revoked) continue;
      const url = this.relayUrlOf(h);
      if (!byRelay.has(url)) byRelay.set(url, []);
      byRelay.get(url).push(h.host_id);
    }
    for (const [url, ids] of byRelay) this.relay(url).watch(ids);
  }

  online(host) {
    const relay = this.relays.get(this.relayUrlOf(host));
    return Boolean(!host.revoked && relay && relay.state === "connected" && relay.presence.get(host.host_id));
  }

  connection(hostId) {
    let conn = this.conns.get(hostId);
    if (!conn) {
      const host = this.host(hostId);
      if (!host) return null;
      conn = new HostConnection(host, this.relay(host.relay_url), this.identity, {
        revoked: host.revoked,
        steer: {
          relayFor: (url) => this.relay(url),
          remember: (url) => this._rememberNode(hostId, url),
          release: (url) => this._release(url),
        },
      });
      conn.addEventListener("state", (ev) => {
        // (The record may have been reloaded since this connection began: mark the current one.)
        const current = this.host(hostId) || host;
        if (ev.detail.state === "revoked" && !current.revoked) this._markRevoked(current, ev.detail.detail, conn);
        // Once per connection: the hosts it linked (an event may have been missed while away).
        if (ev.detail.state === "connected") this._askLinked(hostId, conn);
      });
      this.conns.set(hostId, conn);
    }
    return conn;
  }

  // The cluster node a host's connection was steered to (url), or "" when that node failed it:
  // kept in IndexedDB with the host (node_url), tried first next time, watched there.
  async _rememberNode(hostId, url) {
    const host = this.host(hostId);
    const conn = this.conns.get(hostId);
    const was = host?.node_url || conn?.host.node_url || "";
    for (const record of new Set([host, conn?.host])) {
      if (!record) continue;
      if (url) record.node_url = url;
      else delete record.node_url;
    }
    if (host && was !== url) await store.putHost(host).catch(() => {});
    this._watchAll();
    if (was && was !== url) this._release(was);
    emit(this, { kind: "relay" });
  }

  // Stop the connection to a relay node no host is reached through any more.
  _release(url) {
    const relay = this.relays.get(url);
    if (!relay) return;
    if (this.hosts.some((h) => h.relay_url === url || h.node_url === url)) return;
    if ([...this.conns.values()].some((c) => c.relay === relay || c.home === relay)) return;
    relay.stop();
    this.relays.delete(url);
    emit(this, { kind: "relay" });
  }

  // Remembered, so a reload shows the same screen without dialing the host again.
  async _markRevoked(host, detail, conn = null) {
    host.revoked = { at: Date.now() / 1000, detail };
    if (conn && conn.host !== host) conn.host.revoked = host.revoked;
    await store.putHost(host).catch(() => {});
    this._watchAll();
    emit(this, { kind: "revoked", hostId: host.host_id });
  }

  // A refused *linked* host may accept this browser later (its parent had not handed it this
  // browser yet: `tether ssh refresh`), so its screens offer to try again: forget the refusal
  // and dial once more. A refusal again is remembered again.
  async retryRefused(hostId) {
    const host = this.host(hostId);
    const conn = this.conns.get(hostId);
    if (!host) return;
    delete host.revoked;
    if (conn && conn.host !== host) delete conn.host.revoked;
    await store.putHost(host).catch(() => {});
    this._watchAll();
    if (conn) conn.reopen();
    const model = this.models.get(hostId);
    if (model && !model.started) model.start().catch((err) => console.warn("host model failed to start", err));
    emit(this, { kind: "retry", hostId });
  }

  async _askLinked(hostId, conn) {
    const asked = this._tick;
    let items;
    try {
      items = await conn.call("hosts.linked", {}, { retryFor: 0 });
    } catch (err) {
      return; // no read scope, an older host, or the connection went away (asked again on the next)
    }
    if (Array.isArray(items)) await this.learnLinked(hostId, items, { complete: true, asked });
  }

  // One at a time, so the answer of hosts.linked and live events never interleave.
  _serially(fn) {
    this._learning = this._learning.then(fn).catch((err) => console.warn("learning linked hosts failed", err));
    return this._learning;
  }

  // Announcements of hosts linked to `parentId` (hosts.linked items, or host.linked events' data
  // with their seq): save or update their entries (linked.js planLinked says which). With
  // `complete` the items are the parent's whole hosts.linked answer: an entry learned from that
  // parent that it no longer lists was unlinked (`tether ssh forget`) and goes, unless it was
  // added or updated after the question was asked (`asked`, a this._tick value: that answer may
  // predate the announcement).
  learnLinked(parentId, items, { complete = false, asked = Infinity } = {}) {
    return this._serially(async () => {
      let changed = false;
      for (const item of items) if (await this._learnOne(parentId, item)) changed = true;
      if (changed) this._linkedChanged(parentId);
      if (!complete || !this.host(parentId)) return;
      const listed = new Set(items.map((item) => item?.host_id).filter((id) => typeof id === "string"));
      for (const record of await store.listHosts()) {
        if (record.linked?.via !== parentId || listed.has(record.host_id)) continue;
        if ((this._touched.get(record.host_id) || 0) > asked) continue;
        await this._dropLinked(record, parentId);
      }
    });
  }

  // A parent's host-wide events, in order: host.linked adds or updates an entry, host.unlinked
  // drops the one learned from this parent (unless it was announced again after that unlink).
  followLinked(parentId, events) {
    return this._serially(async () => {
      let changed = false;
      for (const ev of events) {
        if (ev.type === "host.linked") {
          if (await this._learnOne(parentId, { ...ev.data, seq: ev.seq, linked_at: ev.ts })) changed = true;
        } else if (ev.type === "host.unlinked") {
          const record = typeof ev.data?.host_id === "string" ? await store.getHost(ev.data.host_id) : null;
          if (record?.linked?.via === parentId && !((record.linked.seq || 0) > ev.seq)) await this._dropLinked(record, parentId);
        }
      }
      if (changed) this._linkedChanged(parentId);
    });
  }

  // One announcement: whether it changed anything.
  async _learnOne(parentId, item) {
    const parent = this.host(parentId);
    const ann = parseAnnouncement(item);
    if (!parent || !ann) return false;
    // Planned against the stored record, not this page's copy: a pairing that just saved the
    // same host directly must win.
    const existing = (await store.getHost(ann.hostId)) || null;
    const plan = planLinked(parent, ann, existing, { parentOf: (id) => this.host(id) });
    if (!plan) return false;
    const changes = plan.action === "add" ? plan.host : plan.changes;
    await store.putHost(plan.action === "add" ? plan.host : { ...existing, ...changes });
    this._touched.set(ann.hostId, ++this._tick);
    const known = this.host(ann.hostId);
    if (known) Object.assign(known, changes);
    else this.hosts.push({ ...changes });
    // A live connection dials with its own copy of the record: the next channel uses the new key.
    const conn = this.conns.get(ann.hostId);
    if (conn && plan.action === "update") {
      if (conn.host !== known) Object.assign(conn.host, changes);
      if (changes.host_static && conn.state === "failed") conn.retry();
    }
    return true;
  }

  _linkedChanged(parentId) {
    this.hosts.sort((a, b) => a.name.localeCompare(b.name));
    this._watchAll();
    emit(this, { kind: "linked", hostId: parentId });
  }

  // A learned entry its parent unlinked: its connection closes, the entry and its cursor go, and
  // the screens hear of it ("unlinked": one of its screens goes back to the hosts, which say why).
  // Only ever an entry learned from `parentId` (callers check): never one paired directly.
  async _dropLinked(record, parentId) {
    const hostId = record.host_id;
    const conn = this.conns.get(hostId);
    if (conn) conn.stop();
    this.conns.delete(hostId);
    this.models.delete(hostId);
    this._touched.delete(hostId);
    await store.deleteHost(hostId);
    this.hosts = this.hosts.filter((h) => h.host_id !== hostId);
    this._watchAll();
    if (record.node_url) this._release(record.node_url);
    const by = this.host(parentId)?.name || record.linked.via_name || parentId;
    this.notice = { hostId, text: `${record.name} was removed by ${by}` };
    emit(this, { kind: "unlinked", hostId, via: parentId });
  }

  // Sessions waiting for a person's approval on a host, as far as this browser knows (its model,
  // kept live while connected, from its cache while not).
  waiting(hostId) {
    const model = this.models.get(hostId);
    return model ? [...model.shownSessions().values()].filter(waitsForMe) : [];
  }

  model(hostId) {
    let model = this.models.get(hostId);
    if (!model) {
      const conn = this.connection(hostId);
      if (!conn) return null;
      model = new HostModel(conn);
      this.models.set(hostId, model);
      // Hosts it links and unlinks, as it says so (these events carry no session).
      model.addEventListener("change", (ev) => {
        const told = (ev.detail.events || []).filter((e) => (e.type === "host.linked" || e.type === "host.unlinked") && !e.session);
        if (told.length) this.followLinked(hostId, told);
      });
      if (conn.state !== "revoked") model.start().catch((err) => console.warn("host model failed to start", err));
      else model.load().catch(() => {});
      // (Its own event type, not "change": the screens need not redraw for it.)
      this.dispatchEvent(new CustomEvent("model", { detail: { model } }));
    }
    return model;
  }

  // After a pairing: reload the hosts and watch the new one (a re-paired host starts afresh).
  async added(host) {
    const node = host ? this.host(host.host_id)?.node_url : null;
    if (host) {
      const conn = this.conns.get(host.host_id);
      if (conn) conn.stop();
      this.conns.delete(host.host_id);
      this.models.delete(host.host_id);
    }
    await this.load();
    if (node) this._release(node);
  }

  async forget(hostId) {
    // A forgotten linked host stays away until its parent announces it anew (another `tether ssh`).
    const host = this.host(hostId);
    const parent = this.parentOf(host);
    if (parent) {
      parent.forgotten_links = { ...(parent.forgotten_links || {}), [hostId]: host.linked.seq || 0 };
      await store.putHost(parent).catch(() => {});
    }
    const conn = this.conns.get(hostId);
    if (conn) conn.stop();
    this.conns.delete(hostId);
    this.models.delete(hostId);
    await store.deleteHost(hostId);
    await this.load();
    if (host?.node_url) this._release(host.node_url);
  }

  // Network back or page visible again: skip the backoff waits.
  wake() {
    for (const relay of this.relays.values()) relay.wake();
    for (const conn of this.conns.values()) conn.retry();
  }
}
