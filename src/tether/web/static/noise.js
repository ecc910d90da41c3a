// A small sans-I/O Noise Protocol Framework (revision 34) on WebCrypto, the twin of
// tether/crypto/noise.py + tether/crypto/channel.py. Only what tether needs:
//
//   Noise_IK_25519_AESGCM_SHA256      paired devices (the device knows the host's static key)
//   Noise_IKpsk2_25519_AESGCM_SHA256  pairing (psk = the one-time secret of the pairing link)
//   Noise_X_25519_AESGCM_SHA256       one-way: the relay mailbox's sealed messages (crypto/seal.py)
//
// WebCrypto is asynchronous, so every step returns a promise; nothing here does I/O — the caller
// moves the frames. SecureChannel serialises its own calls, so frames are always sealed and opened
// in order (the nonce is a counter: a gap, replay or reorder fails authentication for good).
//
// Keys: a key pair is {privateKey: CryptoKey (X25519, usually non-extractable), publicKey: Uint8Array}.
// WebCrypto cannot import a *raw* X25519 private key, so importX25519Private wraps the 32 raw bytes
// in the fixed PKCS#8 header (RFC 8410) and imports that; the public half is then computed as
// X25519(private, basepoint 9), which works on non-extractable keys too. Only the test vectors need
// to inject raw keys; real keys are generated non-extractable.

import { concat, equal, fromHex, utf8 } from "./bytes.js";

export const DHLEN = 32;
export const HASHLEN = 32;
export const TAGLEN = 16;
export const MAX_MESSAGE = 65535;
export const PSKLEN = 32;
const MAX_NONCE = (1n << 64n) - 1n;

// Bound into the handshake hash, exactly as channel.py's PROLOGUE.
export const PROLOGUE = utf8("tether/1");
export const FLAG_FINAL = 0;
export const FLAG_MORE = 1;
// flag + chunk + tag is one maximal Noise message.
export const MAX_CHUNK = MAX_MESSAGE - TAGLEN - 1;
export const DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024;

export const PATTERNS = {
  IK: [
    ["e", "es", "s", "ss"],
    ["e", "ee", "se"],
  ],
  IKpsk2: [
    ["e", "es", "s", "ss"],
    ["e", "ee", "se", "psk"],
  ],
  // One-way (spec §7.4): IK's first message alone. Only the initiator ever sends, so the
  // responder→initiator cipher that split() also returns must stay unused.
  X: [["e", "es", "s", "ss"]],
};

export class NoiseError extends Error {
  constructor(message) {
    super(message);
    this.name = "NoiseError";
    this.code = "noise";
  }
}

export class ChannelError extends Error {
  constructor(message, hint = null) {
    super(message);
    this.name = "ChannelError";
    this.code = "channel";
    this.hint = hint;
  }
}

export function protocolName(pattern) {
  if (!(pattern in PATTERNS)) throw new NoiseError(`unsupported Noise pattern ${pattern} (tether uses ${Object.keys(PATTERNS).join(", ")})`);
  return `Noise_${pattern}_25519_AESGCM_SHA256`;
}

const subtle = () => globalThis.crypto.subtle;

// --- X25519 keys ---------------------------------------------------------------------------------

const PKCS8_X25519 = fromHex("302e020100300506032b656e04220420");
const BASEPOINT = (() => {
  const b = new Uint8Array(32);
  b[0] = 9;
  return b;
})();

export async function generateX25519() {
  const pair = await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const publicKey = new Uint8Array(await subtle().exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey };
}

export async function importX25519Private(raw, extractable = false) {
  if (raw.length !== 32) throw new NoiseError("an X25519 private key is 32 bytes");
  const privateKey = await subtle().importKey("pkcs8", concat(PKCS8_X25519, raw), { name: "X25519" }, extractable, [
    "deriveBits",
  ]);
  return { privateKey, publicKey: await dh(privateKey, BASEPOINT) };
}

export async function dh(privateKey, publicBytes) {
  let bits;
  try {
    const pub = await subtle().importKey("raw", publicBytes, { name: "X25519" }, true, []);
    bits = await subtle().deriveBits({ name: "X25519", public: pub }, privateKey, 256);
  } catch {
    // WebCrypto refuses low-order points (all-zero secret), like `cryptography` does in Python.
    throw new NoiseError("the peer sent an invalid X25519 public key");
  }
  return new Uint8Array(bits);
}

// --- hash, HMAC, HKDF (spec §4.3) ----------------------------------------------------------------

async function hash(data) {
  return new Uint8Array(await subtle().digest("SHA-256", data));
}

async function hmac(key, data) {
  const k = await subtle().importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", k, data));
}

async function hkdf(chainingKey, ikm, outputs) {
  const tempKey = await hmac(chainingKey, ikm);
  const out = [];
  let previous = new Uint8Array(0);
  for (let i = 1; i <= outputs; i++) {
    previous = await hmac(tempKey, concat(previous, Uint8Array.of(i)));
    out.push(previous);
  }
  return out;
}

// --- CipherState (spec §5.1) ---------------------------------------------------------------------

export class CipherState {
  // Build with CipherState.create(keyBytes | null); without a key it passes data through.
  constructor(key, nonce = 0n) {
    this._key = key; // an AES-GCM CryptoKey, non-extractable, or null
    this.n = BigInt(nonce);
    this._broken = false;
  }

  static async create(keyBytes = null, nonce = 0n) {
    if (keyBytes === null) return new CipherState(null, nonce);
    if (keyBytes.length !== 32) throw new NoiseError("a Noise cipher key is 32 bytes");
    const key = await subtle().importKey("raw", keyBytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
    return new CipherState(key, nonce);
  }

  get hasKey() {
    return this._key !== null;
  }

  _nonce() {
    if (this._broken) throw new NoiseError("this Noise cipher state failed earlier and cannot be used again");
    if (this.n >= MAX_NONCE) throw new NoiseError("the Noise nonce is exhausted; a new handshake is needed");
    // AESGCM nonce: 32 zero bits then the counter, big-endian (spec §12.3).
    const iv = new Uint8Array(12);
    new DataView(iv.buffer).setBigUint64(4, this.n, false);
    return iv;
  }

  async encryptWithAd(ad, plaintext) {
    if (this._key === null) return plaintext;
    if (plaintext.length + TAGLEN > MAX_MESSAGE) throw new NoiseError(`a Noise message is at most ${MAX_MESSAGE} bytes`);
    const iv = this._nonce();
    this.n += 1n; // reserved before the await: concurrent callers never share a nonce
    const ct = await subtle().encrypt({ name: "AES-GCM", iv, additionalData: ad, tagLength: 128 }, this._key, plaintext);
    return new Uint8Array(ct);
  }

  async decryptWithAd(ad, ciphertext) {
    if (this._key === null) return ciphertext;
    const iv = this._nonce();
    if (ciphertext.length > MAX_MESSAGE) {
      this._broken = true;
      throw new NoiseError(`a Noise message is at most ${MAX_MESSAGE} bytes`);
    }
    let pt;
    try {
      pt = await subtle().decrypt({ name: "AES-GCM", iv, additionalData: ad, tagLength: 128 }, this._key, ciphertext);
    } catch {
      this._broken = true;
      throw new NoiseError("a Noise message failed authentication");
    }
    this.n += 1n;
    return new Uint8Array(pt);
  }
}

// --- SymmetricState (spec §5.2) ------------------------------------------------------------------

class SymmetricState {
  static async create(name) {
    const s = new SymmetricState();
    if (name.length <= HASHLEN) {
      s.h = new Uint8Array(HASHLEN);
      s.h.set(name);
    } else {
      s.h = await hash(name);
    }
    s.ck = s.h;
    s.cipher = new CipherState(null);
    return s;
  }

  async mixKey(ikm) {
    const [ck, tempK] = await hkdf(this.ck, ikm, 2);
    this.ck = ck;
    this.cipher = await CipherState.create(tempK);
  }

  async mixHash(data) {
    this.h = await hash(concat(this.h, data));
  }

  async mixKeyAndHash(ikm) {
    const [ck, tempH, tempK] = await hkdf(this.ck, ikm, 3);
    this.ck = ck;
    await this.mixHash(tempH);
    this.cipher = await CipherState.create(tempK);
  }

  async encryptAndHash(plaintext) {
    const ct = await this.cipher.encryptWithAd(this.h, plaintext);
    await this.mixHash(ct);
    return ct;
  }

  async decryptAndHash(ciphertext) {
    const pt = await this.cipher.decryptWithAd(this.h, ciphertext);
    await this.mixHash(ciphertext);
    return pt;
  }

  async split() {
    const [k1, k2] = await hkdf(this.ck, new Uint8Array(0), 2);
    return [await CipherState.create(k1), await CipherState.create(k2)];
  }
}

// --- HandshakeState (spec §5.3) ------------------------------------------------------------------

export class HandshakeState {
  // HandshakeState.create({pattern, initiator, s, rs, psk, prologue, e}); s and e are key pairs.
  static async create({ pattern, initiator, s, rs = null, psk = null, prologue = new Uint8Array(0), e = null }) {
    const hs = new HandshakeState();
    hs.name = protocolName(pattern);
    hs._messages = PATTERNS[pattern];
    hs._pskMode = pattern.includes("psk");
    if (hs._pskMode && (psk === null || psk.length !== PSKLEN)) throw new NoiseError(`${hs.name} needs a ${PSKLEN}-byte psk`);
    if (!hs._pskMode && psk !== null) throw new NoiseError(`${hs.name} takes no psk`);
    if (initiator && (rs === null || rs.length !== DHLEN)) {
      throw new NoiseError(`the initiator needs the responder's ${DHLEN}-byte static key`);
    }
    hs._initiator = initiator;
    hs._s = s;
    hs._e = e;
    hs._rs = rs;
    hs._re = null;
    hs._psk = psk;
    hs._index = 0;
    hs._failed = false;
    hs._split = null;
    hs._sym = await SymmetricState.create(utf8(hs.name));
    await hs._sym.mixHash(prologue);
    // Pre-message "<- s": both sides hash the responder's static key.
    await hs._sym.mixHash(rs !== null ? rs : s.publicKey);
    return hs;
  }

  get complete() {
    return this._split !== null;
  }

  get remoteStatic() {
    return this._rs;
  }

  get handshakeHash() {
    if (!this.complete) throw new NoiseError("the handshake hash is only final once the handshake is complete");
    return this._sym.h;
  }

  // [send, receive] transport ciphers for this side.
  split() {
    if (this._split === null) throw new NoiseError("the handshake is not complete yet");
    const [c1, c2] = this._split;
    this._split = [null, null];
    if (c1 === null) throw new NoiseError("the transport ciphers were already handed out");
    return this._initiator ? [c1, c2] : [c2, c1];
  }

  _checkTurn(writing) {
    if (this._failed) throw new NoiseError("this handshake failed earlier and cannot continue");
    if (this.complete) throw new NoiseError("the handshake is already complete");
    const myTurn = (this._index % 2 === 0) === this._initiator;
    if (myTurn !== writing) throw new NoiseError("it is the peer's turn to send a handshake message");
  }

  _overhead(tokens) {
    let hasKey = this._sym.cipher.hasKey;
    let size = 0;
    for (const token of tokens) {
      if (token === "e") {
        size += DHLEN;
        hasKey = hasKey || this._pskMode;
      } else if (token === "s") {
        size += DHLEN + (hasKey ? TAGLEN : 0);
      } else {
        hasKey = true;
      }
    }
    return size + (hasKey ? TAGLEN : 0);
  }

  async _finishMessage() {
    this._index += 1;
    if (this._index === this._messages.length) this._split = await this._sym.split();
  }

  async writeMessage(payload = new Uint8Array(0)) {
    this._checkTurn(true);
    const tokens = this._messages[this._index];
    if (payload.length + this._overhead(tokens) > MAX_MESSAGE) throw new NoiseError(`a Noise message is at most ${MAX_MESSAGE} bytes`);
    const out = [];
    try {
      for (const token of tokens) {
        if (token === "e") {
          if (this._e === null) this._e = await generateX25519();
          out.push(this._e.publicKey);
          await this._sym.mixHash(this._e.publicKey);
          if (this._pskMode) await this._sym.mixKey(this._e.publicKey); // spec §9.2
        } else if (token === "s") {
          out.push(await this._sym.encryptAndHash(this._s.publicKey));
        } else if (token === "psk") {
          await this._sym.mixKeyAndHash(this._psk);
        } else {
          await this._sym.mixKey(await this._dhToken(token));
        }
      }
      out.push(await this._sym.encryptAndHash(payload));
    } catch (err) {
      this._failed = true;
      throw err;
    }
    await this._finishMessage();
    return concat(...out);
  }

  async readMessage(message) {
    this._checkTurn(false);
    if (message.length > MAX_MESSAGE) {
      this._failed = true;
      throw new NoiseError(`a Noise message is at most ${MAX_MESSAGE} bytes`);
    }
    const tokens = this._messages[this._index];
    if (message.length < this._overhead(tokens)) {
      this._failed = true;
      throw new NoiseError("the handshake message is too short");
    }
    let payload;
    try {
      let rest = message;
      for (const token of tokens) {
        if (token === "e") {
          this._re = rest.slice(0, DHLEN);
          rest = rest.subarray(DHLEN);
          await this._sym.mixHash(this._re);
          if (this._pskMode) await this._sym.mixKey(this._re);
        } else if (token === "s") {
          const size = DHLEN + (this._sym.cipher.hasKey ? TAGLEN : 0);
          this._rs = await this._sym.decryptAndHash(rest.slice(0, size));
          rest = rest.subarray(size);
        } else if (token === "psk") {
          await this._sym.mixKeyAndHash(this._psk);
        } else {
          await this._sym.mixKey(await this._dhToken(token));
        }
      }
      payload = await this._sym.decryptAndHash(rest.slice());
    } catch (err) {
      this._failed = true;
      throw err;
    }
    await this._finishMessage();
    return payload;
  }

  // ee/es/se/ss: first letter the initiator's key, second the responder's.
  async _dhToken(token) {
    const [mine, theirs] = this._initiator ? [token[0], token[1]] : [token[1], token[0]];
    const priv = mine === "e" ? this._e : this._s;
    const pub = theirs === "e" ? this._re : this._rs;
    if (!priv || !pub) throw new NoiseError(`the ${token} token needs a key this handshake does not have`);
    return dh(priv.privateKey, pub);
  }
}

// --- SecureChannel: handshake + transport + fragmentation (channel.py) ---------------------------

const CLOSED_MESSAGE = "the secure channel is closed";
const TRANSPORT_FAILURE =
  "a frame failed to decrypt: the frame was tampered with, replayed, dropped or reordered; the channel is closed";

// state: "handshaking" -> "open" -> "closed"; any failure -> "closed" for good.
export class SecureChannel {
  // SecureChannel.initiator({staticKey, remoteStatic, psk}) — IK, or IKpsk2 when psk is given.
  static async initiator({ staticKey, remoteStatic, psk = null, maxMessage = DEFAULT_MAX_MESSAGE, prologue = PROLOGUE, e = null }) {
    const pattern = psk === null ? "IK" : "IKpsk2";
    let hs;
    try {
      hs = await HandshakeState.create({ pattern, initiator: true, s: staticKey, rs: remoteStatic, psk, prologue, e });
    } catch (err) {
      throw new ChannelError(`cannot start a secure channel: ${err.message}`);
    }
    return new SecureChannel("initiator", hs, psk !== null, maxMessage);
  }

  static async responder({ staticKey, psk = null, maxMessage = DEFAULT_MAX_MESSAGE, prologue = PROLOGUE, e = null }) {
    const pattern = psk === null ? "IK" : "IKpsk2";
    let hs;
    try {
      hs = await HandshakeState.create({ pattern, initiator: false, s: staticKey, psk, prologue, e });
    } catch (err) {
      throw new ChannelError(`cannot accept a secure channel: ${err.message}`);
    }
    return new SecureChannel("responder", hs, psk !== null, maxMessage);
  }

  constructor(role, handshake, usesPsk, maxMessage) {
    this.role = role;
    this.state = "handshaking";
    this._handshake = handshake;
    this._usesPsk = usesPsk;
    this._maxMessage = maxMessage;
    this._started = false;
    this._send = null;
    this._recv = null;
    this.remoteStatic = null;
    this.handshakeHash = null;
    this._outgoing = [];
    this._partial = [];
    this._partialSize = 0;
    this._queue = Promise.resolve();
  }

  // Every call runs after the previous one finished: WebCrypto is async, Noise is not reorderable.
  _serial(fn) {
    const run = this._queue.then(fn);
    this._queue = run.catch(() => {});
    return run;
  }

  _close() {
    this.state = "closed";
    this._handshake = null;
    this._send = this._recv = null;
    this._outgoing = [];
    this._partial = [];
    this._partialSize = 0;
  }

  _fail(message, hint = null) {
    this._close();
    return new ChannelError(message, hint);
  }

  _require(state, action) {
    if (this.state === "closed") throw new ChannelError(CLOSED_MESSAGE, "open a new channel");
    if (this.state !== state) throw new ChannelError(`cannot ${action} while the channel is ${this.state}`);
  }

  close() {
    this._close();
  }

  // Initiator only: queue handshake message 1, whose payload is always empty (it is replayable).
  start() {
    return this._serial(async () => {
      this._require("handshaking", "start the handshake");
      if (this.role !== "initiator") throw new ChannelError("only the initiator starts the handshake; the responder waits for it");
      if (this._started) throw new ChannelError("the handshake was already started");
      try {
        this._outgoing.push(await this._handshake.writeMessage(new Uint8Array(0)));
      } catch (err) {
        throw this._fail(`could not start the handshake: ${err.message}`);
      }
      this._started = true;
    });
  }

  // Feed one frame; resolves to the events it completed:
  // {type: "handshake", remoteStatic, handshakeHash} or {type: "message", data}.
  receive(frame) {
    return this._serial(async () => {
      if (this.state === "handshaking") return [await this._receiveHandshake(frame)];
      this._require("open", "receive");
      return this._receiveTransport(frame);
    });
  }

  // Queue one application message, fragmented like channel.py.
  send(data) {
    return this._serial(async () => {
      this._require("open", "send");
      if (data.length > this._maxMessage) {
        throw new ChannelError(`the message is ${data.length} bytes; this channel carries at most ${this._maxMessage}`);
      }
      const frames = [];
      let offset = 0;
      try {
        for (;;) {
          const chunk = data.subarray(offset, offset + MAX_CHUNK);
          offset += chunk.length;
          const flag = offset < data.length ? FLAG_MORE : FLAG_FINAL;
          frames.push(await this._send.encryptWithAd(new Uint8Array(0), concat(Uint8Array.of(flag), chunk)));
          if (flag === FLAG_FINAL) break;
        }
      } catch (err) {
        throw this._fail(`cannot send: ${err.message}; the channel is closed`);
      }
      this._outgoing.push(...frames);
    });
  }

  // Drain the frames waiting to go to the peer, in order.
  dataToSend() {
    if (this.state === "closed") throw new ChannelError(CLOSED_MESSAGE, "open a new channel");
    const frames = this._outgoing;
    this._outgoing = [];
    return frames;
  }

  async _receiveHandshake(frame) {
    if (this.role === "initiator" && !this._started) throw new ChannelError("start() the handshake before receiving frames");
    const hs = this._handshake;
    try {
      await hs.readMessage(frame);
      if (this.role === "responder") this._outgoing.push(await hs.writeMessage(new Uint8Array(0)));
    } catch {
      throw this._handshakeFailure();
    }
    [this._send, this._recv] = hs.split();
    this.remoteStatic = hs.remoteStatic;
    this.handshakeHash = hs.handshakeHash;
    this._handshake = null;
    this.state = "open";
    return { type: "handshake", remoteStatic: this.remoteStatic, handshakeHash: this.handshakeHash };
  }

  _handshakeFailure() {
    if (this.role === "initiator") {
      if (this._usesPsk) {
        return this._fail(
          "the host did not prove it holds the key you paired with, or the pairing secret did not match; the channel is closed",
          "check the pairing link is current and was meant for this host",
        );
      }
      return this._fail(
        "the host did not prove it holds the key you paired with; the channel is closed",
        "if the host's keys were reset, pair this device again",
      );
    }
    return this._fail("the client's handshake did not match this host's key (or was corrupted); the channel is closed");
  }

  async _receiveTransport(frame) {
    let plaintext;
    try {
      plaintext = await this._recv.decryptWithAd(new Uint8Array(0), frame);
    } catch {
      throw this._fail(TRANSPORT_FAILURE);
    }
    if (plaintext.length === 0 || (plaintext[0] !== FLAG_FINAL && plaintext[0] !== FLAG_MORE)) {
      throw this._fail("the peer sent a malformed fragment; the channel is closed");
    }
    const chunk = plaintext.subarray(1);
    if (this._partialSize + chunk.length > this._maxMessage) {
      throw this._fail(`the peer sent a message larger than ${this._maxMessage} bytes; the channel is closed`);
    }
    this._partial.push(chunk);
    this._partialSize += chunk.length;
    if (plaintext[0] === FLAG_MORE) return [];
    const data = concat(...this._partial);
    this._partial = [];
    this._partialSize = 0;
    return [{ type: "message", data }];
  }
}

export { equal as bytesEqual };
