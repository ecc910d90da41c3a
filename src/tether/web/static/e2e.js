// An end-to-end encrypted message transport over one relay channel (protocol/e2e.py's twin):
// runs the Noise handshake as initiator, then seals and opens whole application messages.
// Any tampered, replayed, dropped or reordered frame closes the channel with PROTOCOL_ERROR;
// there is no recovery inside a channel — the caller opens a new one and resumes from its cursor.

import { CloseCode } from "./frames.js";
import { ChannelClosed } from "./relay.js";
import { SecureChannel } from "./noise.js";

export const HANDSHAKE_TIMEOUT = 10000;
// The host's application message limit (protocol/messages.py MAX_MESSAGE_BYTES).
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export class HandshakeFailed extends Error {
  constructor(message, hint = null) {
    super(message);
    this.name = "HandshakeFailed";
    this.code = "handshake";
    this.hint = hint;
  }
}

export class TransportClosed extends Error {
  constructor(message, { hint = null, code = "closed", cause = null } = {}) {
    super(message);
    this.name = "TransportClosed";
    this.code = code;
    this.hint = hint;
    this.cause = cause;
  }
}

export class E2ETransport {
  constructor(channel, secure) {
    this.channel = channel;
    this.secure = secure;
    this.remoteStatic = null;
    this._inbox = [];
    this._sendQueue = Promise.resolve();
  }

  static async initiate(channel, { staticKey, remoteStatic, psk = null, timeout = HANDSHAKE_TIMEOUT }) {
    const secure = await SecureChannel.initiator({ staticKey, remoteStatic, psk, maxMessage: MAX_MESSAGE_BYTES });
    const transport = new E2ETransport(channel, secure);
    await secure.start();
    transport._flush();
    let timer;
    const timedOut = new Promise((_, reject) => {
      timer = setTimeout(() => {
        channel.close(CloseCode.NORMAL, "handshake timed out");
        reject(new TransportClosed(`the host did not answer the end-to-end handshake within ${timeout / 1000} s`));
      }, timeout);
    });
    try {
      await Promise.race([transport._untilHandshake(), timedOut]);
    } catch (err) {
      if (err instanceof ChannelClosed && err.closeCode === CloseCode.PROTOCOL_ERROR) {
        throw new HandshakeFailed(
          "the host did not prove it holds the key you paired with (it rejected the handshake)",
          "if the host's keys changed, pair again; otherwise the relay may not be honest",
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return transport;
  }

  async _untilHandshake() {
    while (this.remoteStatic === null) await this._receiveFrame();
  }

  async _receiveFrame() {
    const frame = await this.channel.recv(); // ChannelClosed passes through: its code says whether to retry
    let events;
    try {
      events = await this.secure.receive(frame);
    } catch (err) {
      const handshaking = this.remoteStatic === null;
      this.channel.close(
        CloseCode.PROTOCOL_ERROR,
        handshaking
          ? "end-to-end handshake failed: the keys did not match"
          : "end-to-end check failed: a frame was tampered with, replayed, dropped or reordered",
      );
      if (handshaking) throw new HandshakeFailed(err.message, err.hint);
      throw new TransportClosed(err.message, { hint: err.hint, code: "channel" });
    }
    for (const ev of events) {
      if (ev.type === "handshake") this.remoteStatic = ev.remoteStatic;
      else this._inbox.push(ev.data);
    }
    this._flush();
  }

  _flush() {
    for (const frame of this.secure.dataToSend()) this.channel.send(frame);
  }

  // Seal and send under one queue: nonces are counters, frames must leave in sealing order.
  send(data) {
    const run = this._sendQueue.then(async () => {
      try {
        await this.secure.send(data);
        this._flush();
      } catch (err) {
        throw err instanceof ChannelClosed ? err : new TransportClosed(err.message, { cause: err });
      }
    });
    this._sendQueue = run.catch(() => {});
    return run;
  }

  async recv() {
    while (this._inbox.length === 0) await this._receiveFrame();
    return this._inbox.shift();
  }

  close(reason = "closed by peer") {
    this.channel.close(CloseCode.NORMAL, reason);
  }
}
