// The dialing side of the relay protocol for a device (the browser twin of relay/link.py):
// one WebSocket, admission (HELLO → CHALLENGE → AUTH → WELCOME), channels (OPEN/OPENED/DATA/CLOSE),
// presence (WATCH/PRESENCE), the mailbox of a host that is away (MAILBOX_GET/QUEUE, answered
// MAILBOX_SNAPSHOT/OK/ERROR), and a cluster node's steering (REDIRECT: which node holds a host,
// kept in `redirects` and told as a "redirect" event). Reconnecting is the caller's job (see
// connection.js), and so is following a redirect (HostConnection).

import {
  CloseCode,
  FrameError,
  FrameType,
  MAX_CHANNEL,
  Role,
  authMessage,
  closeMessage,
  decodeFrame,
  encodeAuth,
  encodeClose,
  encodeData,
  encodeHello,
  encodeMailboxGet,
  encodeMailboxQueue,
  encodeOpen,
  encodeWatch,
} from "./frames.js";

const REACH_HINT = "check the network; the page keeps retrying";
// A channel whose reader leaves this many frames unread is closed rather than buffered forever.
const MAX_INBOX_FRAMES = 4096;
// relay/link.py waits as long for a mailbox answer.
const MAILBOX_TIMEOUT_MS = 30000;

export class RelayError extends Error {
  constructor(message, { hint = REACH_HINT, code = "relay" } = {}) {
    super(message);
    this.name = "RelayError";
    this.hint = hint;
    this.code = code;
  }
}

// The relay said no to a mailbox request (MAILBOX_ERROR: MAILBOX_FULL, TOO_LARGE, MAILBOX_OFF,
// RATE_LIMITED…); the connection stays open. The message is the relay's own sentence.
export class MailboxRefused extends Error {
  constructor(closeCode, message) {
    super(message || closeMessage(closeCode));
    this.name = "MailboxRefused";
    this.closeCode = closeCode;
    this.code = "mailbox_refused";
  }
}

export class ChannelClosed extends Error {
  constructor(closeCode, reason) {
    super(reason || closeMessage(closeCode));
    this.name = "ChannelClosed";
    this.closeCode = closeCode;
    this.code = "channel_closed";
  }
}

// http(s)/ws(s) URL → the relay's WebSocket URL (relay/link.py websocket_url): /ws appended,
// query and fragment dropped — a pairing link's secret never goes on the wire.
export function websocketUrl(relayUrl) {
  const url = new URL(relayUrl);
  const schemes = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" };
  if (!(url.protocol in schemes)) throw new RelayError(`${relayUrl} is not a relay URL`, { code: "usage" });
  url.protocol = schemes[url.protocol];
  url.hash = "";
  url.search = "";
  if (!url.pathname.endsWith("/ws")) url.pathname = url.pathname.replace(/\/+$/, "") + "/ws";
  return url.toString();
}

function describeClose(event) {
  if (event.code === 1000 || event.code === 1005) return "the relay closed the connection";
  if (event.code === 1001) return "the relay is shutting down";
  if (event.code === 1006) return "the connection to the relay was lost";
  if (event.code === 1009) return "a frame was larger than the relay accepts";
  return `the relay closed the connection (${event.code}${event.reason ? " " + event.reason : ""})`;
}

export class Channel {
  constructor(link, id) {
    this.link = link;
    this.id = id;
    this._inbox = [];
    this._waiters = [];
    this.closed = null; // ChannelClosed once ended
  }

  _feed(payload) {
    if (this.closed) return true;
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve(payload);
    else if (this._inbox.length >= MAX_INBOX_FRAMES) return false;
    else this._inbox.push(payload);
    return true;
  }

  _finish(code, reason) {
    if (this.closed) return;
    this.closed = new ChannelClosed(code, reason || closeMessage(code));
    for (const w of this._waiters.splice(0)) w.reject(this.closed);
  }

  // The next payload; rejects with ChannelClosed once the channel ended (after the queued ones).
  recv() {
    if (this._inbox.length) return Promise.resolve(this._inbox.shift());
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  send(payload) {
    if (this.closed) throw this.closed;
    this.link._send(encodeData(this.id, payload));
  }

  close(code = CloseCode.NORMAL, reason = "") {
    if (this.closed) return;
    this._finish(code, reason || "closed by this side");
    this.link._forget(this);
    try {
      this.link._send(encodeClose(this.id, code, reason));
    } catch {
      // the link is gone: the channel is closed either way
    }
  }
}

export class RelayLink extends EventTarget {
  // Dial the relay and authenticate as a device; resolves once WELCOME arrived.
  static connect(relayUrl, identity, { timeout = 10000 } = {}) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(websocketUrl(relayUrl));
      } catch (err) {
        reject(err instanceof RelayError ? err : new RelayError(`cannot reach the relay at ${relayUrl}: ${err.message}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      let step = "challenge";
      const fail = (err) => {
        clearTimeout(timer);
        step = "failed";
        try {
          ws.close();
        } catch {
          // already closing
        }
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new RelayError(`the relay at ${relayUrl} did not complete authentication within ${timeout / 1000} s`)),
        timeout,
      );
      ws.onopen = () => ws.send(encodeHello(Role.DEVICE, identity.identityPublic));
      ws.onerror = () => {};
      ws.onclose = (event) => {
        if (step !== "failed" && step !== "done") fail(new RelayError(`cannot reach the relay at ${relayUrl}: ${describeClose(event)}`));
      };
      ws.onmessage = async (event) => {
        if (typeof event.data === "string") return fail(new RelayError(`${relayUrl} is not a tether relay (it sent text)`));
        let frame;
        try {
          frame = decodeFrame(new Uint8Array(event.data));
        } catch (err) {
          return fail(new RelayError(`${relayUrl} does not speak the tether relay protocol (${err.message})`));
        }
        if (frame.type === FrameType.ERROR) {
          return fail(new RelayError(`the relay refused the connection: ${frame.message}`, { code: "relay_refused" }));
        }
        if (step === "challenge" && frame.type === FrameType.CHALLENGE) {
          step = "welcome";
          const signature = await identity.sign(authMessage(Role.DEVICE, frame.nonce));
          if (step === "welcome") ws.send(encodeAuth(signature));
        } else if (step === "welcome" && frame.type === FrameType.WELCOME) {
          clearTimeout(timer);
          step = "done";
          resolve(new RelayLink(ws, relayUrl, frame));
        } else {
          fail(new RelayError(`${relayUrl} sent an unexpected frame during authentication`));
        }
      };
    });
  }

  constructor(ws, relayUrl, welcome) {
    super();
    this.ws = ws;
    this.relayUrl = relayUrl;
    this.deviceId = welcome.id;
    this.maxFrameBytes = welcome.maxFrameBytes;
    this.presence = new Map();
    // host id → the URL of the cluster node that holds it, as this relay node said (REDIRECT, sent
    // before the OPENED of a channel it carries across nodes); never sent by a single relay
    this.redirects = new Map();
    this.isClosed = false;
    this.closeReason = "";
    this._channels = new Map();
    this._opening = new Map();
    this._requests = new Map(); // mailbox req → {resolve, reject}
    this._nextRequest = 1;
    this.closedPromise = new Promise((resolve) => (this._resolveClosed = resolve));
    ws.onmessage = (event) => this._onMessage(event);
    ws.onclose = (event) => this._die(this.closeReason || describeClose(event));
  }

  open(hostId, offerId = "", timeout = 10000) {
    this._checkOpen();
    let id;
    do id = 1 + Math.floor(Math.random() * MAX_CHANNEL);
    while (this._channels.has(id) || this._opening.has(id));
    const channel = new Channel(this, id);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._opening.delete(id);
        try {
          this._send(encodeClose(id, CloseCode.NORMAL, "open timed out"));
        } catch {
          // the link is gone anyway
        }
        reject(new RelayError(`the relay did not answer within ${timeout / 1000} s when opening a channel to ${hostId}`));
      }, timeout);
      this._opening.set(id, {
        channel,
        resolve: () => {
          clearTimeout(timer);
          this._channels.set(id, channel);
          resolve(channel);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      try {
        this._send(encodeOpen(id, hostId, offerId));
      } catch (err) {
        this._opening.delete(id);
        clearTimeout(timer);
        reject(err);
      }
    });
  }

  // Follow these hosts' presence (replaces the watched set); "presence" events follow.
  watch(hostIds) {
    const ids = [...new Set(hostIds)];
    for (const known of [...this.presence.keys()]) if (!ids.includes(known)) this.presence.delete(known);
    this._send(encodeWatch(ids));
  }

  // {depositedAt (ms), sealed} the host left this browser in the relay's mailbox, or null.
  async snapshot(hostId) {
    const answer = await this._mailbox((req) => encodeMailboxGet(req, hostId));
    if (answer.type !== FrameType.MAILBOX_SNAPSHOT) throw new RelayError("the relay answered a snapshot request with something else");
    return answer.sealed.length ? { depositedAt: answer.depositedAtMs, sealed: answer.sealed } : null;
  }

  // Leave an item sealed for the host; resolves with its id at the relay.
  async queue(hostId, sealed) {
    const answer = await this._mailbox((req) => encodeMailboxQueue(req, hostId, sealed));
    if (answer.type !== FrameType.MAILBOX_OK) throw new RelayError("the relay answered a queued item with something else");
    return answer.value;
  }

  _mailbox(encode) {
    this._checkOpen();
    const req = this._nextRequest;
    this._nextRequest = (req % MAX_CHANNEL) + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._requests.delete(req);
        reject(new RelayError(`the relay did not answer a mailbox request within ${MAILBOX_TIMEOUT_MS / 1000} s`));
      }, MAILBOX_TIMEOUT_MS);
      const settle = (fn) => (value) => {
        clearTimeout(timer);
        this._requests.delete(req);
        fn(value);
      };
      this._requests.set(req, { resolve: settle(resolve), reject: settle(reject) });
      try {
        this._send(encode(req));
      } catch (err) {
        this._requests.get(req)?.reject(err);
      }
    });
  }

  close(reason = "closed by this page") {
    this.closeReason = this.closeReason || reason;
    try {
      this.ws.close(1000);
    } catch {
      // already closed
    }
    this._die(this.closeReason);
  }

  _checkOpen() {
    if (this.isClosed) throw new RelayError(`the relay connection is closed: ${this.closeReason}`);
  }

  _send(frame) {
    this._checkOpen();
    this.ws.send(frame);
  }

  _forget(channel) {
    if (this._channels.get(channel.id) === channel) this._channels.delete(channel.id);
  }

  _onMessage(event) {
    if (typeof event.data === "string") return this._fatal("the relay sent a text message; it is not a tether relay");
    let frame;
    try {
      frame = decodeFrame(new Uint8Array(event.data));
    } catch (err) {
      return this._fatal(`the relay sent a malformed frame (${err instanceof FrameError ? err.message : err})`);
    }
    switch (frame.type) {
      case FrameType.DATA: {
        const channel = this._channels.get(frame.channel);
        if (channel && !channel._feed(frame.payload)) channel.close(CloseCode.TOO_SLOW, closeMessage(CloseCode.TOO_SLOW));
        break;
      }
      case FrameType.OPENED: {
        const pending = this._opening.get(frame.channel);
        if (pending) {
          this._opening.delete(frame.channel);
          pending.resolve();
        }
        break;
      }
      case FrameType.CLOSE: {
        const pending = this._opening.get(frame.channel);
        if (pending) {
          this._opening.delete(frame.channel);
          pending.reject(new ChannelClosed(frame.code, frame.reason || closeMessage(frame.code)));
          break;
        }
        const channel = this._channels.get(frame.channel);
        if (channel) {
          this._channels.delete(frame.channel);
          channel._finish(frame.code, frame.reason);
        }
        break;
      }
      case FrameType.PRESENCE:
        this.presence.set(frame.hostId, frame.online);
        this.dispatchEvent(new CustomEvent("presence", { detail: { hostId: frame.hostId, online: frame.online } }));
        break;
      case FrameType.REDIRECT:
        this.redirects.set(frame.hostId, frame.url);
        this.dispatchEvent(new CustomEvent("redirect", { detail: { hostId: frame.hostId, url: frame.url } }));
        break;
      case FrameType.MAILBOX_SNAPSHOT:
      case FrameType.MAILBOX_OK:
        this._requests.get(frame.req)?.resolve(frame);
        break;
      case FrameType.MAILBOX_ERROR:
        this._requests.get(frame.req)?.reject(new MailboxRefused(frame.code, frame.message));
        break;
      case FrameType.ERROR:
        this._fatal(frame.message || closeMessage(frame.code));
        break;
      default:
        this._fatal(`the relay sent an unexpected frame (type ${frame.type})`);
    }
  }

  _fatal(reason) {
    this.closeReason = reason;
    this.close(reason);
  }

  _die(reason) {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeReason = reason;
    // "the connection to the relay was lost" says it already: no "…was lost: …was lost".
    const said = /\brelay\b/.test(reason) ? reason : `the relay connection was lost: ${reason}`;
    for (const channel of this._channels.values()) channel._finish(CloseCode.PEER_GONE, said);
    this._channels.clear();
    for (const pending of this._opening.values()) pending.reject(new RelayError(said));
    this._opening.clear();
    for (const pending of [...this._requests.values()]) pending.reject(new RelayError(said));
    this.dispatchEvent(new CustomEvent("close", { detail: { reason } }));
    this._resolveClosed(reason);
  }
}
