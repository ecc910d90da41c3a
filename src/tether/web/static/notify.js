// System notifications for a person who started a task and put the phone down: an agent waits for
// an approval, finished its turn, or a session failed or ended. Two ways, both on the same toggle:
//   - Web Push: each host pushes them itself (host/push/), sealed to this browser's keys, so they
//     arrive with the page closed. One service worker registration per host (scope push/<host id>/):
//     a push subscription is bound to one server key, and each host signs with its own.
//   - In the page: shown through the service worker while the page is hidden, for hosts that send
//     no pushes (or when this browser has no push service).
//
//   notifySupport()   "unsupported" | "default" | "granted" | "denied"
//   notifyWanted()    the person's choice (Settings: "Notify me when an agent needs me"), kept in
//                     localStorage; effective only with the permission granted (notifyOn())
//   setNotify(on)     from the toggle's change event only: a user gesture is where permission is
//                     asked for
//   noticeFor(ev, …)  what a notification says about one event (no I/O)
//   Notifier          follows every HostModel's events and shows / closes notifications
//
// A notification says which host and session, and what waits: the command line or the file path,
// never output, answers or error text. Tags: one per approval (replaced, never duplicated; closed
// when someone answers it, here or elsewhere), one per session for "finished its turn" and the like.

const PREF = "tether.notify";
const MAX_NAME = 40;
const MAX_BODY = 140;
// A turn or session that ended longer ago than this (replayed after a reconnect) is not news.
const RECENT_SECONDS = 15 * 60;

export function notifySupport() {
  if (!window.isSecureContext || !("Notification" in window) || !("serviceWorker" in navigator)) return "unsupported";
  return Notification.permission;
}

export function notifyWanted() {
  try {
    return localStorage.getItem(PREF) === "on";
  } catch {
    return false;
  }
}

export function notifyOn() {
  return notifyWanted() && notifySupport() === "granted";
}

function remember(on) {
  try {
    if (on) localStorage.setItem(PREF, "on");
    else localStorage.removeItem(PREF);
  } catch {
    // storage refused (private mode): the choice lasts as long as the page
  }
}

// The toggle changed (a user gesture): on asks for the permission when it was never given.
// Answers the permission state afterwards.
export async function setNotify(on) {
  let state = notifySupport();
  if (!on || state === "unsupported") {
    remember(false);
    if (state !== "unsupported") await closeTether();
    return state;
  }
  if (state === "default") state = await Notification.requestPermission();
  remember(state === "granted");
  return state;
}

function short(text, max) {
  const t = String(text ?? "").replace(/\s+/g, " ").trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

export const approvalTag = (hostId, approval) => `tether:${hostId}:approval:${approval}`;
export const sessionTag = (hostId, session) => `tether:${hostId}:session:${session}`;

function changed(details) {
  const paths = Array.isArray(details.paths) && details.paths.length ? details.paths : details.path ? [details.path] : [];
  if (!paths.length) return details.grant_root ? `wants write access to: ${details.grant_root}` : "wants to change a file";
  return `wants to change: ${paths[0]}${paths.length > 1 ? ` and ${paths.length - 1} more` : ""}`;
}

// {title, body, tag, data} for an event worth a notification, else null. `session` is the host
// model's summary of ev.session (its title), when known.
export function noticeFor(ev, { hostId, hostName, session = null }) {
  const d = ev.data || {};
  const name = short(session?.title || (session?.command || []).join(" ") || ev.session, MAX_NAME);
  const title = `${short(hostName || hostId, MAX_NAME)} · ${name}`;
  const data = { hostId, session: ev.session, hash: `#/host/${hostId}/session/${ev.session}` };
  let body;
  switch (ev.type) {
    case "approval.requested":
      if (d.kind === "question") body = `asks: ${d.details?.questions?.[0]?.question || "a question"}`;
      else if (d.kind === "tool") body = `wants to use ${d.details?.tool || "a tool"}`;
      else if (d.kind === "plan") body = "has a plan for you to approve";
      else body = d.kind === "command" ? `wants to run: ${d.details?.command || "a command"}` : changed(d.details || {});
      return { title, body: short(body, MAX_BODY), tag: approvalTag(hostId, d.approval), data: { ...data, approval: d.approval } };
    case "turn.completed":
      if (d.status === "completed") body = "finished its turn";
      else if (d.status === "failed") body = "turn failed";
      else return null; // interrupted: someone did that on purpose
      break;
    case "session.exited":
      if (d.exit_code === 0) body = "finished";
      else body = `failed${d.reason ? `: ${d.reason}` : d.exit_code != null ? ` (exit ${d.exit_code})` : ""}`;
      break;
    default:
      return null;
  }
  return { title, body: short(body, MAX_BODY), tag: sessionTag(hostId, ev.session), data };
}

// -- Web Push -------------------------------------------------------------------------------------

const pushScope = (hostId) => `push/${hostId}/`;

function serverKey(b64u) {
  const bin = atob(b64u.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function sameKey(a, b) {
  const x = a ? new Uint8Array(a) : null;
  return !!x && x.length === b.length && x.every((v, i) => v === b[i]);
}

async function activeRegistration(hostId) {
  const reg = await navigator.serviceWorker.register("sw.js", { scope: pushScope(hostId) });
  if (reg.active) return reg;
  const worker = reg.installing || reg.waiting;
  await new Promise((resolve, reject) => {
    if (!worker) return resolve();
    worker.addEventListener("statechange", () => {
      if (worker.state === "activated") resolve();
      else if (worker.state === "redundant") reject(new Error("the push service worker did not install"));
    });
    setTimeout(() => reject(new Error("the push service worker did not start in time")), 20000);
  });
  return reg;
}

// This browser subscribes to a host's pushes ("subscribed"), or says why not ("unsupported": no
// push service here; "off": the host sends none).
export async function subscribePush(model) {
  if (!("PushManager" in window) || notifySupport() !== "granted") return "unsupported";
  const info = model.info || (await model.conn.call("host.info"));
  if (!info?.push_key) return "off";
  const key = serverKey(info.push_key);
  const reg = await activeRegistration(model.hostId);
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameKey(sub.options?.applicationServerKey, key)) {
    await sub.unsubscribe(); // the host's key changed (a new home): subscribe anew
    sub = null;
  }
  sub = sub || (await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }));
  await model.conn.call("push.subscribe", sub.toJSON(), { retryFor: 15000 });
  return "subscribed";
}

export async function unsubscribePush(model) {
  const reg = await navigator.serviceWorker.getRegistration(pushScope(model.hostId));
  const sub = await reg?.pushManager?.getSubscription();
  if (sub) await sub.unsubscribe();
  await model.conn.call("push.unsubscribe", {}, { retryFor: 15000 }).catch(() => null);
  await reg?.unregister();
}

async function registration() {
  const reg = await navigator.serviceWorker.getRegistration();
  if (reg?.active) return reg;
  // Not registered yet (the page has just loaded): wait a little for it.
  return Promise.race([navigator.serviceWorker.ready, new Promise((resolve) => setTimeout(() => resolve(null), 5000))]);
}

// Closes every notification of this page (the toggle was turned off).
async function closeTether() {
  const reg = await registration();
  for (const n of (await reg?.getNotifications()) || []) if (n.tag.startsWith("tether:")) n.close();
}

const hidden = () => document.visibilityState === "hidden";

export class Notifier {
  constructor(tether) {
    this.tether = tether;
    this.pushed = new Map(); // host id → what subscribing to its pushes gave ("subscribed", …)
    this.pending = new Map(); // approval tag → {notice, shown}: approvals nobody answered yet
    this.watched = new WeakSet();
    this._queue = Promise.resolve(); // shows and closes run in order
    tether.addEventListener("model", (ev) => this.watch(ev.detail.model));
    for (const model of tether.models.values()) this.watch(model);
    // Put down while an agent waits (the page went to the background after the question came):
    // the question is shown then.
    document.addEventListener("visibilitychange", () => {
      if (hidden()) this.remind();
    });
  }

  watch(model) {
    if (this.watched.has(model)) return;
    this.watched.add(model);
    model.addEventListener("change", (ev) => {
      if (ev.detail?.events) this.take(model, ev.detail.events);
      if (model.info && !this.pushed.has(model.hostId) && notifyOn()) this.push(model);
    });
  }

  // Pushes from every host, or from one (the toggle was turned on; a host's info arrived).
  async push(model = null) {
    const models = model ? [model] : [...this.tether.models.values()];
    await Promise.all(models.map(async (m) => {
      this.pushed.set(m.hostId, "subscribing");
      const state = await subscribePush(m).catch((err) => (console.warn("push subscription failed", err), "failed"));
      this.pushed.set(m.hostId, state);
      this.dispatchState();
    }));
  }

  async unpush() {
    await Promise.all([...this.tether.models.values()].map((m) => unsubscribePush(m).catch(() => null)));
    this.pushed.clear();
    this.dispatchState();
  }

  dispatchState() {
    window.dispatchEvent(new CustomEvent("tether-push", { detail: Object.fromEntries(this.pushed) }));
  }

  // One batch of a host's events. Within it only the last word per tag counts, so an approval
  // asked and answered in the same batch (a replay after a reconnect) shows nothing.
  take(model, events) {
    if (notifySupport() === "unsupported") return;
    const hostId = model.hostId;
    const hostName = this.tether.host(hostId)?.name;
    const now = Date.now() / 1000;
    const ops = new Map(); // tag → notice to show, or null to close
    for (const ev of events) {
      if (!ev.session) continue;
      const d = ev.data || {};
      if (ev.type === "approval.resolved" || ev.type === "approval.cleared") {
        const tag = approvalTag(hostId, d.approval);
        this.pending.delete(tag);
        ops.set(tag, null);
      } else if (ev.type === "turn.started") {
        ops.set(sessionTag(hostId, ev.session), null); // "finished its turn" is stale now
      } else {
        const notice = noticeFor(ev, { hostId, hostName, session: model.sessions.get(ev.session) });
        if (!notice) continue;
        if (ev.type === "approval.requested") this.pending.set(notice.tag, { notice, shown: false });
        else if (now - (ev.ts || now) > RECENT_SECONDS) continue;
        ops.set(notice.tag, notice);
      }
    }
    const pushes = this.pushed.get(hostId) === "subscribed"; // the host shows them itself, page or not
    for (const [tag, notice] of ops) {
      if (!notice) this._run(() => this._close(tag));
      else if (hidden() && notifyOn() && !pushes) this._show(notice);
      else if (pushes && hidden() && this.pending.has(tag)) this.pending.get(tag).shown = true; // pushed
    }
  }

  // Approvals that came while the page was visible and still wait.
  remind() {
    if (!notifyOn()) return;
    for (const entry of this.pending.values()) if (!entry.shown) this._show(entry.notice);
  }

  _show(notice) {
    const entry = this.pending.get(notice.tag);
    if (entry) entry.shown = true;
    this._run(async () => {
      const reg = await registration();
      if (!reg) return;
      await reg.showNotification(notice.title, { body: notice.body, tag: notice.tag, data: notice.data, icon: "icon.svg" });
    });
  }

  async _close(tag) {
    const reg = await registration();
    for (const n of (await reg?.getNotifications({ tag })) || []) n.close();
  }

  _run(op) {
    this._queue = this._queue.then(op).catch((err) => console.warn("notification failed", err));
    return this._queue;
  }
}
