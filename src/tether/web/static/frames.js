// The relay wire format, the twin of tether/protocol/frames.py (read that file for the layouts).
// Each frame is one binary WebSocket message: a 1-byte type, then its fields, big-endian.
// decodeFrame throws FrameError — and nothing else — on anything malformed.

import { concat, fromUtf8, utf8 } from "./bytes.js";

// 2 added the mailbox frames, 3 REDIRECT (a cluster node names the node that holds a host); the
// relay admits 1..3 and sends REDIRECT only to a client whose HELLO says 3 or more.
export const PROTOCOL_VERSION = 3;
export const AUTH_CONTEXT = utf8("tether-relay-auth-v1\0");
export const NONCE_LEN = 32;
export const KEY_LEN = 32;
export const SIGNATURE_LEN = 64;
export const MAX_ID_LEN = 64;
export const MAX_WATCH = 1024;
export const MAX_CHANNEL = 0xffffffff;
export const DATA_HEADER_LEN = 5;
// A sealed mailbox blob is one Noise message (crypto/seal.py MAX_SEALED).
export const MAX_SEALED = 65535;

export const FrameType = Object.freeze({
  CHALLENGE: 0x01, // relay→any: version u16 | nonce [32]
  HELLO: 0x02, // any→relay: version u16 | role u8 | identity_public [32]
  AUTH: 0x03, // any→relay: signature [64]
  WELCOME: 0x04, // relay→any: max_frame_bytes u32 | id rest
  ERROR: 0x05, // relay→any: code u16 | message rest
  ALLOWLIST: 0x10, // host→relay
  OFFERS: 0x11, // host→relay
  OPEN: 0x20, // device→relay: channel u32 | host_id str8 | offer_id rest
  OPENED: 0x21, // relay→device: channel u32
  INCOMING: 0x22, // relay→host
  DATA: 0x30, // both: channel u32 | payload rest
  CLOSE: 0x31, // both: channel u32 | code u16 | reason rest
  WATCH: 0x40, // device→relay: count u16 | count × host_id str8
  PRESENCE: 0x41, // relay→device: online u8 | host_id rest
  // relay→device (protocol 3): host_id str8 | url rest(UTF-8) — a cluster node says which node holds
  // the host: reconnect there for it (a hint: the channel opened here works too)
  REDIRECT: 0x42,
  // The mailbox (protocol 2): each request carries an id (req) its answer repeats.
  MAILBOX_DEPOSIT: 0x50, // host→relay
  MAILBOX_TAKE: 0x51, // host→relay
  MAILBOX_ACK: 0x52, // host→relay
  MAILBOX_GET: 0x58, // device→relay: req u32 | host_id rest
  MAILBOX_QUEUE: 0x59, // device→relay: req u32 | host_id str8 | sealed rest
  MAILBOX_SNAPSHOT: 0x5c, // relay→device: req u32 | deposited_at u64 (ms) | sealed rest (empty: none held)
  MAILBOX_ITEM: 0x5d, // relay→host
  MAILBOX_OK: 0x5e, // relay→any: req u32 | value u64 (QUEUE: the item's id)
  MAILBOX_ERROR: 0x5f, // relay→any: req u32 | code u16 | message rest — the connection stays open
});

export const Role = Object.freeze({ HOST: 1, DEVICE: 2 });

export const CloseCode = Object.freeze({
  NORMAL: 0,
  PEER_GONE: 1,
  NOT_ALLOWED: 2,
  HOST_OFFLINE: 3,
  NO_SUCH_OFFER: 4,
  REVOKED: 5,
  TOO_SLOW: 6,
  RATE_LIMITED: 7,
  PROTOCOL_ERROR: 8,
  SHUTDOWN: 9,
  AUTH_FAILED: 10,
  AUTH_TIMEOUT: 11,
  REPLACED: 12,
  TOO_MANY_CHANNELS: 13,
  UNSUPPORTED_VERSION: 14,
  TOO_MANY_CONNECTIONS: 15,
  ENROLLMENT_REQUIRED: 16,
  IDLE_TIMEOUT: 17,
  MAILBOX_OFF: 18,
  MAILBOX_FULL: 19,
  TOO_LARGE: 20,
  NODE_UNREACHABLE: 21,
});

// Sentences for people, with the next step; the browser wording of frames.py's CLOSE_MESSAGES.
export const CLOSE_MESSAGES = {
  0: "the channel was closed",
  1: "the host disconnected from the relay; reconnecting",
  2: "this browser is not authorised on that host (unknown or revoked); pair again with `tether pair` on the host",
  3: "the host is offline; start it with `tether host` (or `tether up`)",
  4: "this pairing link is no longer valid: it was already used or it expired; run `tether pair` on the host for a new one",
  5: "this browser was revoked on the host; pair again with `tether pair` on the host",
  6: "this page fell too far behind and the channel was closed; reconnecting",
  7: "too many requests to the relay; retrying in a moment",
  8: "the relay or the host received a malformed frame; reload the page, or upgrade tether",
  9: "the relay is shutting down; reconnecting",
  10: "the relay could not verify this browser's key",
  11: "authentication with the relay took too long",
  12: "another connection for the same host took over",
  13: "too many open channels on this connection",
  14: "the relay speaks another protocol version; upgrade tether",
  15: "this browser already has as many connections to the relay as it may; close other tabs",
  16: "this relay only admits enrolled hosts",
  17: "the connection sat idle, so the relay closed it; reconnecting",
  18: "this relay keeps no mailbox, so nothing can wait for the host there",
  19: "the relay's mailbox for this host is full; wait until the host is back",
  20: "too large for the relay's mailbox; shorten it",
  21: "the relay node that holds the host could not be reached; reconnecting",
};

// Channel endings after which a new channel may well work (frames.py RETRYABLE_CLOSES).
export const RETRY_CODES = new Set([0, 1, 3, 6, 7, 9, 12, 21]);

export function closeMessage(code) {
  return CLOSE_MESSAGES[code] ?? `closed with code ${code}`;
}

export class FrameError extends Error {
  constructor(message) {
    super(message);
    this.name = "FrameError";
    this.code = "frame";
  }
}

export function authMessage(role, nonce) {
  return concat(AUTH_CONTEXT, Uint8Array.of(role), nonce);
}

// --- encoding (what a device sends) ---------------------------------------------------------------

function header(type, size) {
  const out = new Uint8Array(size);
  out[0] = type;
  return [out, new DataView(out.buffer)];
}

function checkChannel(channel) {
  if (!Number.isInteger(channel) || channel < 0 || channel > MAX_CHANNEL) throw new FrameError("channel id out of range");
  return channel;
}

function asciiId(text, allowEmpty = false) {
  if (!allowEmpty && !text) throw new FrameError("an id must not be empty");
  if (text.length > MAX_ID_LEN || /[^\x21-\x7e]/.test(text)) throw new FrameError(`not a valid id: ${JSON.stringify(text)}`);
  return utf8(text);
}

function str8(text) {
  const bytes = asciiId(text);
  return concat(Uint8Array.of(bytes.length), bytes);
}

export function encodeHello(role, identityPublic, version = PROTOCOL_VERSION) {
  if (identityPublic.length !== KEY_LEN) throw new FrameError("identity key must be 32 bytes");
  const [out, view] = header(FrameType.HELLO, 4 + KEY_LEN);
  view.setUint16(1, version);
  out[3] = role;
  out.set(identityPublic, 4);
  return out;
}

export function encodeAuth(signature) {
  if (signature.length !== SIGNATURE_LEN) throw new FrameError("signature must be 64 bytes");
  return concat(Uint8Array.of(FrameType.AUTH), signature);
}

export function encodeOpen(channel, hostId, offerId = "") {
  const [head, view] = header(FrameType.OPEN, 5);
  view.setUint32(1, checkChannel(channel));
  return concat(head, str8(hostId), asciiId(offerId, true));
}

export function encodeData(channel, payload) {
  const [out, view] = header(FrameType.DATA, DATA_HEADER_LEN + payload.length);
  view.setUint32(1, checkChannel(channel));
  out.set(payload, DATA_HEADER_LEN);
  return out;
}

export function encodeClose(channel, code = CloseCode.NORMAL, reason = "") {
  const [head, view] = header(FrameType.CLOSE, 7);
  view.setUint32(1, checkChannel(channel));
  view.setUint16(5, code);
  return concat(head, clipText(reason));
}

export function encodeWatch(hostIds) {
  if (hostIds.length > MAX_WATCH) throw new FrameError(`a device can watch at most ${MAX_WATCH} hosts`);
  const [head, view] = header(FrameType.WATCH, 3);
  view.setUint16(1, hostIds.length);
  return concat(head, ...hostIds.map(str8));
}

function checkSealed(sealed) {
  if (sealed.length > MAX_SEALED) throw new FrameError(`a sealed blob is at most ${MAX_SEALED} bytes, not ${sealed.length}`);
  return sealed;
}

export function encodeMailboxGet(req, hostId) {
  const [head, view] = header(FrameType.MAILBOX_GET, 5);
  view.setUint32(1, checkChannel(req));
  return concat(head, asciiId(hostId));
}

export function encodeMailboxQueue(req, hostId, sealed) {
  if (!sealed.length) throw new FrameError("a queued item cannot be empty");
  const [head, view] = header(FrameType.MAILBOX_QUEUE, 5);
  view.setUint32(1, checkChannel(req));
  return concat(head, str8(hostId), checkSealed(sealed));
}

function clipText(text) {
  let bytes = utf8(text);
  if (bytes.length > 1024) bytes = utf8(fromUtf8(bytes.subarray(0, 1024)).replace(/\uFFFD+$/, ""));
  return bytes;
}

// --- decoding -------------------------------------------------------------------------------------

class Reader {
  constructor(data) {
    this.data = data;
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.pos = 0;
  }
  need(n) {
    if (this.pos + n > this.data.length) throw new FrameError("truncated frame");
  }
  u8() {
    this.need(1);
    return this.data[this.pos++];
  }
  u16() {
    this.need(2);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  u32() {
    this.need(4);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  // Times in ms and item ids: exact as numbers up to 2^53, far beyond either.
  u64() {
    this.need(8);
    const v = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return Number(v);
  }
  sealed() {
    const bytes = this.rest();
    if (bytes.length > MAX_SEALED) throw new FrameError(`a sealed blob is at most ${MAX_SEALED} bytes`);
    return bytes;
  }
  take(n) {
    this.need(n);
    const out = this.data.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  rest() {
    const out = this.data.slice(this.pos);
    this.pos = this.data.length;
    return out;
  }
  restText() {
    const bytes = this.rest();
    if (bytes.length > 1024) throw new FrameError("text longer than 1024 bytes");
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new FrameError("text is not UTF-8");
    }
  }
  restId(allowEmpty = false) {
    return checkId(fromUtf8(this.rest()), allowEmpty);
  }
  str8() {
    const n = this.u8();
    return checkId(fromUtf8(this.take(n)), false);
  }
  end() {
    if (this.pos !== this.data.length) throw new FrameError("trailing bytes after the frame");
  }
}

function checkId(text, allowEmpty) {
  if ((!allowEmpty && !text) || text.length > MAX_ID_LEN || /[^\x21-\x7e]/.test(text)) {
    throw new FrameError("malformed id");
  }
  return text;
}

// One binary WebSocket message → {type, ...fields}.
export function decodeFrame(data) {
  if (!(data instanceof Uint8Array)) data = new Uint8Array(data);
  if (data.length === 0) throw new FrameError("empty frame");
  const r = new Reader(data);
  const type = r.u8();
  let frame;
  switch (type) {
    case FrameType.DATA:
      return { type, channel: r.u32(), payload: r.rest() };
    case FrameType.CHALLENGE:
      frame = { type, version: r.u16(), nonce: r.take(NONCE_LEN) };
      break;
    case FrameType.HELLO: {
      const version = r.u16();
      const role = r.u8();
      if (role !== Role.HOST && role !== Role.DEVICE) throw new FrameError(`unknown role ${role}`);
      frame = { type, version, role, identityPublic: r.take(KEY_LEN) };
      break;
    }
    case FrameType.AUTH:
      frame = { type, signature: r.take(SIGNATURE_LEN) };
      break;
    case FrameType.WELCOME:
      frame = { type, maxFrameBytes: r.u32(), id: r.restId() };
      break;
    case FrameType.ERROR:
      frame = { type, code: r.u16(), message: r.restText() };
      break;
    case FrameType.OPENED:
      frame = { type, channel: r.u32() };
      break;
    case FrameType.CLOSE:
      frame = { type, channel: r.u32(), code: r.u16(), reason: r.restText() };
      break;
    case FrameType.PRESENCE: {
      const online = r.u8();
      if (online > 1) throw new FrameError("PRESENCE online flag must be 0 or 1");
      frame = { type, online: online === 1, hostId: r.restId() };
      break;
    }
    case FrameType.OPEN: {
      const channel = r.u32();
      const hostId = r.str8();
      frame = { type, channel, hostId, offerId: r.restId(true) };
      break;
    }
    case FrameType.WATCH: {
      const count = r.u16();
      if (count > MAX_WATCH) throw new FrameError(`a device can watch at most ${MAX_WATCH} hosts`);
      const hostIds = [];
      for (let i = 0; i < count; i++) hostIds.push(r.str8());
      frame = { type, hostIds };
      break;
    }
    case FrameType.REDIRECT: {
      const hostId = r.str8();
      frame = { type, hostId, url: r.restText() };
      break;
    }
    case FrameType.MAILBOX_GET:
      frame = { type, req: r.u32(), hostId: r.restId() };
      break;
    case FrameType.MAILBOX_QUEUE: {
      const req = r.u32();
      const hostId = r.str8();
      const sealed = r.sealed();
      if (!sealed.length) throw new FrameError("a queued item cannot be empty");
      frame = { type, req, hostId, sealed };
      break;
    }
    case FrameType.MAILBOX_SNAPSHOT:
      frame = { type, req: r.u32(), depositedAtMs: r.u64(), sealed: r.sealed() };
      break;
    case FrameType.MAILBOX_OK:
      frame = { type, req: r.u32(), value: r.u64() };
      break;
    case FrameType.MAILBOX_ERROR:
      frame = { type, req: r.u32(), code: r.u16(), message: r.restText() };
      break;
    case FrameType.INCOMING:
    case FrameType.ALLOWLIST:
    case FrameType.OFFERS:
    case FrameType.MAILBOX_DEPOSIT:
    case FrameType.MAILBOX_TAKE:
    case FrameType.MAILBOX_ACK:
    case FrameType.MAILBOX_ITEM:
      // Host-side frames: a browser never receives them; treat them as opaque.
      frame = { type, body: r.rest() };
      break;
    default:
      throw new FrameError(`unknown frame type 0x${type.toString(16).padStart(2, "0")}`);
  }
  r.end();
  return frame;
}
