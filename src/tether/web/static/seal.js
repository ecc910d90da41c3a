// Sealed messages for the relay mailbox, the twin of tether/crypto/seal.py (read it for what
// opening one proves, and what it does not): exactly one Noise_X_25519_AESGCM_SHA256 handshake
// message from the sender's static key to the receiver's, with the caller's context as prologue:
//
//   e (32, clear) || sender's static key (32 + 16 tag) || plaintext (n + 16 tag)
//
// The relay can replay or drop one, so the caller dedups on an id inside the plaintext.

import { DHLEN, HandshakeState, MAX_MESSAGE, TAGLEN } from "./noise.js";

const PATTERN = "X";
// e, the encrypted static key and the plaintext's tag: 96 bytes around the plaintext.
export const MIN_SEALED = DHLEN + (DHLEN + TAGLEN) + TAGLEN;
export const MAX_SEALED = MAX_MESSAGE;
export const MAX_SEALED_PLAINTEXT = MAX_SEALED - MIN_SEALED;

export class SealError extends Error {
  constructor(message, hint = null) {
    super(message);
    this.name = "SealError";
    this.code = "seal";
    this.hint = hint;
  }
}

// staticKey: this side's key pair ({privateKey, publicKey}); remoteStatic: the receiver's 32 bytes.
export async function seal(staticKey, remoteStatic, context, plaintext) {
  if (plaintext.length > MAX_SEALED_PLAINTEXT) {
    throw new SealError(`the message is ${plaintext.length} bytes; a sealed message carries at most ${MAX_SEALED_PLAINTEXT}`);
  }
  try {
    const hs = await HandshakeState.create({ pattern: PATTERN, initiator: true, s: staticKey, rs: remoteStatic, prologue: context });
    return await hs.writeMessage(plaintext);
  } catch (err) {
    throw new SealError(`cannot seal: ${err.message}`);
  }
}

// {sender (the sealer's static public key), plaintext} of a message sealed to staticKey.
export async function openSealed(staticKey, context, sealed) {
  if (sealed.length < MIN_SEALED) throw new SealError(`the sealed message is ${sealed.length} bytes; the smallest is ${MIN_SEALED}`);
  if (sealed.length > MAX_SEALED) throw new SealError(`the sealed message is ${sealed.length} bytes; the largest is ${MAX_SEALED}`);
  const hs = await HandshakeState.create({ pattern: PATTERN, initiator: false, s: staticKey, prologue: context });
  try {
    const plaintext = await hs.readMessage(sealed);
    return { sender: hs.remoteStatic, plaintext };
  } catch {
    throw new SealError(
      "the sealed message did not open with this browser's key: it was altered, sealed to another key, or sealed for another host or direction",
    );
  }
}
