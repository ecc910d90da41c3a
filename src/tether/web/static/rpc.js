// Request/response correlation over a message transport (protocol/rpc.py's twin, client side).
// Envelopes (protocol/messages.py):
//   {"t":"req","v":1,"id":7,"method":"...","params":{...}}
//   {"t":"res","id":7,"result":...}   or   {"t":"res","id":7,"error":{"code","message","hint"}}
//   {"t":"note","method":"...","params":{...}}

import { fromUtf8, utf8 } from "./bytes.js";
import { TransportClosed } from "./e2e.js";

export const PROTOCOL_VERSION = 1;

export class RemoteError extends Error {
  constructor({ code, message, hint = null }) {
    super(message);
    this.name = "RemoteError";
    this.code = code;
    this.hint = hint;
  }
}

export class RpcPeer {
  // onNotification(method, params) may return a promise: the reader waits for it, so a slow
  // consumer slows this reader (and the events.ack it sends) instead of buffering without bound.
  constructor(transport, { onNotification = null } = {}) {
    this.transport = transport;
    this._onNotification = onNotification;
    this._nextId = 1;
    this._pending = new Map();
    this.isClosed = false;
    this.closeError = new TransportClosed("the connection is closed");
    this.closed = this.run();
  }

  call(method, params = {}, { timeout = 30000 } = {}) {
    if (this.isClosed) return Promise.reject(this.closeError);
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = timeout
        ? setTimeout(() => {
            this._pending.delete(id);
            reject(new TransportClosed(`the host did not answer ${method} within ${timeout / 1000} s`, { code: "timeout" }));
          }, timeout)
        : null;
      this._pending.set(id, { resolve, reject, timer });
      this.transport.send(utf8(JSON.stringify({ t: "req", v: PROTOCOL_VERSION, id, method, params }))).catch((err) => {
        this._settle(id, null, err);
      });
    });
  }

  async notify(method, params) {
    const data = utf8(JSON.stringify({ t: "note", method, params }));
    await this.transport.send(data);
    return data.length;
  }

  async run() {
    try {
      for (;;) {
        const data = await this.transport.recv();
        let message;
        try {
          message = JSON.parse(fromUtf8(data));
        } catch {
          continue; // the host never sends this; ignore rather than die
        }
        if (message === null || typeof message !== "object") continue;
        if (message.t === "res") {
          this._settle(message.id, message.error ? new RemoteError(message.error) : null, null, message.result);
        } else if (message.t === "note") {
          if (this._onNotification) {
            try {
              await this._onNotification(message.method, message.params || {});
            } catch (err) {
              console.error("notification handler failed", err);
            }
          }
        } else if (message.t === "req") {
          // Hosts do not call clients; answer like protocol/rpc.py does for an unknown method.
          const error = { code: "unknown_method", message: `unknown method ${JSON.stringify(message.method)}`, hint: null };
          this.transport.send(utf8(JSON.stringify({ t: "res", id: message.id, error }))).catch(() => {});
        }
      }
    } catch (err) {
      this.closeError = err;
    } finally {
      this.isClosed = true;
      for (const id of [...this._pending.keys()]) this._settle(id, null, this.closeError);
    }
  }

  _settle(id, remoteError, transportError, result) {
    const pending = this._pending.get(id);
    if (!pending) return;
    this._pending.delete(id);
    if (pending.timer) clearTimeout(pending.timer);
    if (remoteError) pending.reject(remoteError);
    else if (transportError) pending.reject(transportError);
    else pending.resolve(result ?? null);
  }

  close() {
    this.transport.close();
  }
}
