// Pairing, browser side (ARCHITECTURE §5; client/pairing.py's twin). The page is opened at
//
//   https://RELAY/#pair=<host id>.<host static key>.<offer id>.<secret>
//
// The fragment never reaches the relay. readPairingFragment() takes it out of the address bar and
// the session history at once (history.replaceState), so the secret is never left behind; it
// lives only in memory until pair() has used it.

import { b64uDecode, b64uEncode } from "./bytes.js";
import { E2ETransport } from "./e2e.js";
import { RelayLink } from "./relay.js";
import { RpcPeer } from "./rpc.js";
import { loadIdentity } from "./keys.js";
import { store } from "./store.js";

const ID = /^[a-z2-7]{20}$/;
const OFFER = /^[A-Za-z0-9_-]{8,64}$/;

export class PairingError extends Error {
  constructor(message, hint = null) {
    super(message);
    this.name = "PairingError";
    this.code = "pairing";
    this.hint = hint;
  }
}

const BAD = "this is not a tether pairing link";
const HINT = "open the whole link printed by `tether pair` (it ends in #pair=...)";

// Parse "pair=<host id>.<static>.<offer id>.<secret>" (the fragment, without "#").
export function parsePairingFragment(fragment) {
  if (!fragment.startsWith("pair=")) throw new PairingError(`${BAD}: the #pair=... part is missing`, HINT);
  if (fragment.length > 2048) throw new PairingError(`${BAD} (too long)`, HINT);
  const fields = fragment.slice(5).split(".");
  if (fields.length !== 4) throw new PairingError(`${BAD}: the #pair=... part is incomplete`, HINT);
  const [hostId, staticText, offerId, secretText] = fields;
  let hostStatic, secret;
  try {
    hostStatic = b64uDecode(staticText);
    secret = b64uDecode(secretText);
  } catch {
    throw new PairingError(`${BAD}: it is damaged`, HINT);
  }
  if (!ID.test(hostId) || !OFFER.test(offerId) || hostStatic.length !== 32 || secret.length !== 32) {
    throw new PairingError(`${BAD}: it is damaged`, HINT);
  }
  return { hostId, hostStatic, offerId, secret };
}

// If the page was opened from a pairing link: remove the fragment from the address bar and the
// history entry right away, and return the parsed link (or {error}). Otherwise null.
export function readPairingFragment(loc = window.location, hist = window.history) {
  const hash = loc.hash;
  if (!hash.startsWith("#pair=")) return null;
  hist.replaceState(null, "", loc.pathname + loc.search);
  try {
    return { link: parsePairingFragment(hash.slice(1)) };
  } catch (err) {
    return { error: err };
  }
}

export function defaultDeviceName() {
  const ua = navigator.userAgent;
  const platform = /iPhone|iPad/.test(ua) ? "iPhone" : /Android/.test(ua) ? "Android" : /Mac/.test(ua) ? "Mac" : /Linux/.test(ua) ? "Linux" : "browser";
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrome\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "browser";
  return `${browser} on ${platform}`;
}

// Claim the offer: IKpsk2 with the secret as psk, then pair.complete in the first transport
// message (never in handshake message 1, which is replayable). Saves and returns the host.
export async function pair(link, { name, relayUrl = window.location.origin, onStep = () => {} }) {
  onStep("Creating this browser's keys");
  const identity = await loadIdentity({ create: true });
  onStep("Connecting to the relay");
  const relay = await RelayLink.connect(relayUrl, identity);
  let result;
  try {
    onStep("Opening a channel to the host");
    const channel = await relay.open(link.hostId, link.offerId);
    onStep("Checking the host's key");
    const transport = await E2ETransport.initiate(channel, {
      staticKey: identity.staticKey,
      remoteStatic: link.hostStatic,
      psk: link.secret,
    });
    const peer = new RpcPeer(transport);
    onStep("Registering this browser with the host");
    result = await peer.call("pair.complete", { name, identity_public: b64uEncode(identity.identityPublic) });
  } finally {
    relay.close("pairing finished");
  }
  if (!result || result.host_id !== link.hostId) {
    throw new PairingError("the host answered with a different id than the link names", "ask for a new link");
  }
  const host = {
    host_id: link.hostId,
    name: String(result.host_name || link.hostId),
    relay_url: relayUrl,
    host_static: link.hostStatic,
    device_id: String(result.device_id),
    scopes: Array.isArray(result.scopes) ? result.scopes : [],
    paired_at: Date.now() / 1000,
  };
  await store.putHost(host);
  return host;
}
