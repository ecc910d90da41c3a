// Hosts linked to a paired host (ARCHITECTURE §8; docs/ssh.md "Clients learn of the new host").
// A host this browser is paired with started them with `tether ssh` and handed them its devices,
// so they accept this browser's keys as they are: no new pairing. The page learns them over that
// host's authenticated channel (the `hosts.linked` call on every connection, and `host.linked`
// events in its host-wide subscription), and that channel is all the trust their keys need. When
// that host unlinks one (`host.unlinked`, or no longer in `hosts.linked`), model.js drops the entry
// learned from it. client/connection.py `learn_linked_hosts` is the CLI's twin. No I/O here.

import { b64uDecode, equal } from "./bytes.js";
import { websocketUrl } from "./relay.js";

const ID = /^[a-z2-7]{20}$/;

// One announcement ({host_id, name, static_public, relay_url, linked_at?, seq?}, from hosts.linked
// or a host.linked event) checked, or null when it is malformed.
export function parseAnnouncement(item) {
  if (!item || typeof item !== "object") return null;
  const { host_id: hostId, name, static_public: staticText, relay_url: relayUrl } = item;
  if (typeof hostId !== "string" || !ID.test(hostId)) return null;
  if (typeof name !== "string" || !name || name.length > 100) return null;
  if (typeof relayUrl !== "string" || !relayUrl || relayUrl.length > 512) return null;
  let hostStatic;
  try {
    hostStatic = b64uDecode(staticText);
  } catch {
    return null;
  }
  if (hostStatic.length !== 32) return null;
  const seq = Number.isSafeInteger(item.seq) ? item.seq : 0;
  const linkedAt = typeof item.linked_at === "number" ? item.linked_at : null;
  return { hostId, name, hostStatic, relayUrl, seq, linkedAt };
}

// Whether two relay URLs name the same relay endpoint (http(s)/ws(s), with or without /ws).
export function sameRelay(a, b) {
  try {
    return websocketUrl(a) === websocketUrl(b);
  } catch {
    return false;
  }
}

// What to do with announcement `ann` told by `parent` (a host record of this browser), given the
// record this browser already has under that host id (`existing`, or null):
//
//   {action: "add", host}         save a new linked entry
//   {action: "update", changes}   an entry learned from this parent: its new name, key or relay
//   null                          nothing: the parent itself, an entry paired directly (never
//                                 overwritten), one learned from another host this browser still
//                                 has, one the person forgot (until announced anew), an older
//                                 announcement, or no change
//
// A linked entry uses the parent's device id and scopes (the remote host got this very device in
// its bundle) and the parent's relay URL: the page may only reach its own relay (CSP connect-src
// 'self'), and the relay is no part of the trust (the pinned key is). The relay URL the parent
// announced is kept in `linked.relay_url`, so a screen can say when it is another one.
export function planLinked(parent, ann, existing, { parentOf = () => null, now = Date.now() / 1000 } = {}) {
  if (!parent || !ann || parent.revoked || ann.hostId === parent.host_id) return null;
  const forgotten = parent.forgotten_links?.[ann.hostId];
  if (forgotten !== undefined && !(ann.seq > forgotten)) return null;
  const linked = {
    via: parent.host_id,
    via_name: parent.name,
    relay_url: ann.relayUrl,
    linked_at: ann.linkedAt ?? now,
    seq: ann.seq,
  };
  if (!existing) {
    return {
      action: "add",
      host: {
        host_id: ann.hostId,
        name: ann.name,
        relay_url: parent.relay_url,
        host_static: ann.hostStatic,
        device_id: parent.device_id,
        scopes: [...(parent.scopes || [])],
        paired_at: now,
        linked,
      },
    };
  }
  if (!existing.linked) return null; // paired directly: the person's own pairing wins
  if (existing.linked.via !== parent.host_id && parentOf(existing.linked.via)) return null;
  if (ann.seq < (existing.linked.seq || 0)) return null; // an older word than the one applied
  const changes = {};
  if (existing.name !== ann.name) changes.name = ann.name;
  if (!existing.host_static || !equal(existing.host_static, ann.hostStatic)) changes.host_static = ann.hostStatic;
  if (existing.relay_url !== parent.relay_url) changes.relay_url = parent.relay_url;
  if (existing.device_id !== parent.device_id) changes.device_id = parent.device_id;
  const scopes = [...(parent.scopes || [])];
  if ((existing.scopes || []).join(",") !== scopes.join(",")) changes.scopes = scopes;
  const was = existing.linked;
  if (was.via !== linked.via || was.via_name !== linked.via_name || was.relay_url !== linked.relay_url || was.seq !== linked.seq) {
    changes.linked = { ...linked, linked_at: ann.linkedAt ?? was.linked_at ?? now };
  }
  return Object.keys(changes).length ? { action: "update", changes } : null;
}
