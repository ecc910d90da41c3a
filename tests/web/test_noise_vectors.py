"""The browser's Noise (``web/static/noise.js``, WebCrypto only) against the official vectors,
and against tether's Python implementation (``crypto/channel.py``) as a real peer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tether.crypto.channel import ChannelError, HandshakeComplete, Message, SecureChannel
from tether.crypto.keys import raw_public

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VECTOR_DIR = Path(__file__).resolve().parents[1] / "crypto" / "vectors"
PROTOCOLS = {"Noise_IK_25519_AESGCM_SHA256", "Noise_IKpsk2_25519_AESGCM_SHA256", "Noise_X_25519_AESGCM_SHA256"}


def _vectors() -> list[dict[str, Any]]:
    out = []
    for source in ("cacophony", "snow"):
        for i, vector in enumerate(json.loads((VECTOR_DIR / f"{source}.json").read_text())["vectors"]):
            if vector["protocol_name"] in PROTOCOLS:
                out.append({**vector, "id": f"{source}-{i}-{vector['protocol_name']}"})
    return out


RUN_VECTORS = """
async (vectors) => {
  const { HandshakeState, PATTERNS, importX25519Private } = await import("/noise.js");
  const { fromHex, toHex } = await import("/bytes.js");
  const results = [];
  for (const v of vectors) {
    const pattern = v.protocol_name.split("_")[1];
    const handshakeMessages = PATTERNS[pattern].length; // 1 for the one-way X: only the initiator sends
    const psk = (list) => (list && list.length ? fromHex(list[0]) : null);
    try {
      const initStatic = await importX25519Private(fromHex(v.init_static));
      const initiator = await HandshakeState.create({
        pattern, initiator: true, s: initStatic, rs: fromHex(v.init_remote_static),
        psk: psk(v.init_psks), prologue: fromHex(v.init_prologue),
        e: await importX25519Private(fromHex(v.init_ephemeral)),
      });
      const responder = await HandshakeState.create({
        pattern, initiator: false, s: await importX25519Private(fromHex(v.resp_static)),
        psk: psk(v.resp_psks), prologue: fromHex(v.resp_prologue),
        e: v.resp_ephemeral ? await importX25519Private(fromHex(v.resp_ephemeral)) : null,
      });
      const problems = [];
      const pairs = [[initiator, responder], [responder, initiator]];
      for (let i = 0; i < handshakeMessages; i++) {
        const payload = fromHex(v.messages[i].payload);
        const ct = await pairs[i][0].writeMessage(payload);
        if (toHex(ct) !== v.messages[i].ciphertext) problems.push(`handshake message ${i}`);
        if (toHex(await pairs[i][1].readMessage(ct)) !== v.messages[i].payload) problems.push(`read ${i}`);
      }
      if (toHex(responder.remoteStatic) !== toHex(initStatic.publicKey)) problems.push("remote static");
      if (v.handshake_hash && toHex(initiator.handshakeHash) !== v.handshake_hash) problems.push("handshake hash");
      const [iSend, iRecv] = initiator.split();
      const [rSend, rRecv] = responder.split();
      for (let i = handshakeMessages; i < v.messages.length; i++) {
        const [send, recv] = handshakeMessages === 1 || i % 2 === 0 ? [iSend, rRecv] : [rSend, iRecv];
        const ct = await send.encryptWithAd(new Uint8Array(0), fromHex(v.messages[i].payload));
        if (toHex(ct) !== v.messages[i].ciphertext) problems.push(`transport message ${i}`);
        const pt = await recv.decryptWithAd(new Uint8Array(0), ct);
        if (toHex(pt) !== v.messages[i].payload) problems.push(`read ${i}`);
      }
      results.push({ id: v.id, ok: problems.length === 0, problems, transport: v.messages.length - handshakeMessages });
    } catch (err) {
      results.push({ id: v.id, ok: false, problems: [String(err && err.stack || err)] });
    }
  }
  return results;
}
"""


def test_official_vectors_pass_in_the_browser(page: Any, static_relay: int) -> None:
    vectors = _vectors()
    assert {v["protocol_name"] for v in vectors} == PROTOCOLS
    assert {v["id"].split("-")[0] for v in vectors} == {"cacophony", "snow"}
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    assert page.evaluate("window.isSecureContext")
    results = page.evaluate(RUN_VECTORS, vectors)
    print(f"{len(results)} vectors ran in the browser")
    failed = [r for r in results if not r["ok"]]
    assert not failed, failed
    assert len(results) == len(vectors) > 0
    assert all(r["transport"] > 0 for r in results)


def test_imported_keys_are_not_extractable(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    result = page.evaluate(
        """async () => {
          const { generateX25519, importX25519Private } = await import("/noise.js");
          const generated = await generateX25519();
          const imported = await importX25519Private(new Uint8Array(32).fill(7));
          return [generated.privateKey.extractable, imported.privateKey.extractable,
                  generated.publicKey.length, imported.publicKey.length];
        }"""
    )
    assert result == [False, False, 32, 32]


# --- interop with the Python SecureChannel: the browser is the initiator, as a phone is --------

SETUP_INITIATOR = """
async ({ remoteStatic, psk }) => {
  const noise = await import("/noise.js");
  const { fromHex, toHex } = await import("/bytes.js");
  const staticKey = await noise.generateX25519();
  const ch = await noise.SecureChannel.initiator({
    staticKey, remoteStatic: fromHex(remoteStatic), psk: psk ? fromHex(psk) : null,
  });
  await ch.start();
  window.__ch = ch;
  window.__hex = { fromHex, toHex };
  return { staticPublic: toHex(staticKey.publicKey), frames: ch.dataToSend().map(toHex) };
}
"""

FEED = """
async (frames) => {
  const { fromHex, toHex } = window.__hex;
  const events = [];
  try {
    for (const f of frames) {
      for (const ev of await window.__ch.receive(fromHex(f))) {
        events.push(ev.type === "message" ? { type: "message", data: toHex(ev.data) }
                                          : { type: ev.type, hash: toHex(ev.handshakeHash) });
      }
    }
  } catch (err) {
    return { error: err.message, state: window.__ch.state };
  }
  return { events, state: window.__ch.state };
}
"""

SEND = """
async (hexes) => {
  const { fromHex, toHex } = window.__hex;
  for (const h of hexes) await window.__ch.send(fromHex(h));
  return window.__ch.dataToSend().map(toHex);
}
"""


def _handshake(page: Any, psk: bytes | None) -> tuple[SecureChannel, str]:
    host_static = X25519PrivateKey.generate()
    setup = page.evaluate(
        SETUP_INITIATOR, {"remoteStatic": raw_public(host_static).hex(), "psk": psk.hex() if psk else None}
    )
    assert len(setup["frames"]) == 1 and len(bytes.fromhex(setup["frames"][0])) == 96
    responder = SecureChannel.responder(static=host_static, psk=psk)
    (complete,) = responder.receive(bytes.fromhex(setup["frames"][0]))
    assert isinstance(complete, HandshakeComplete)
    assert complete.remote_static.hex() == setup["staticPublic"]
    reply = responder.data_to_send()
    assert len(reply) == 1 and len(reply[0]) == 48
    result = page.evaluate(FEED, [reply[0].hex()])
    assert result["state"] == "open", result
    assert result["events"] == [{"type": "handshake", "hash": complete.handshake_hash.hex()}]
    return responder, setup["staticPublic"]


@pytest.mark.parametrize("psk", [None, bytes(range(32))], ids=["IK", "IKpsk2"])
def test_browser_initiator_talks_to_python_responder(page: Any, static_relay: int, psk: bytes | None) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    responder, _ = _handshake(page, psk)

    # Browser → Python: small, empty and fragmented (3 frames for 140,000 bytes) messages.
    big = bytes(i % 251 for i in range(140_000))
    frames = page.evaluate(SEND, [b"hello".hex(), b"".hex(), big.hex()])
    assert len(frames) == 1 + 1 + 3
    received = [ev for f in frames for ev in responder.receive(bytes.fromhex(f))]
    assert [ev.data for ev in received if isinstance(ev, Message)] == [b"hello", b"", big]

    # Python → browser, fragmented the same way.
    responder.send(b"world")
    responder.send(big)
    out = responder.data_to_send()
    assert len(out) == 1 + 3
    result = page.evaluate(FEED, [f.hex() for f in out])
    assert [bytes.fromhex(ev["data"]) for ev in result["events"]] == [b"world", big]


def test_browser_refuses_tampered_replayed_and_wrong_keys(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    responder, _ = _handshake(page, None)
    responder.send(b"one")
    (frame,) = responder.data_to_send()
    assert page.evaluate(FEED, [frame.hex()])["events"][0]["data"] == b"one".hex()
    # A replay of the same frame fails, and the channel stays closed afterwards.
    replay = page.evaluate(FEED, [frame.hex()])
    assert replay["state"] == "closed" and "tampered" in replay["error"]
    responder.send(b"two")
    assert "closed" in page.evaluate(FEED, [responder.data_to_send()[0].hex()])["error"]

    # A responder that does not hold the static key the browser expects cannot read message 1,
    # and nothing else can forge message 2: the browser closes the channel.
    host_static = X25519PrivateKey.generate()
    setup = page.evaluate(SETUP_INITIATOR, {"remoteStatic": raw_public(host_static).hex(), "psk": None})
    impostor = SecureChannel.responder(static=X25519PrivateKey.generate())
    with pytest.raises(ChannelError):
        impostor.receive(bytes.fromhex(setup["frames"][0]))
    forged = page.evaluate(FEED, [os.urandom(48).hex()])
    assert forged["state"] == "closed"
    assert "did not prove it holds the key" in forged["error"]


def test_wrong_psk_fails_the_handshake(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    host_static = X25519PrivateKey.generate()
    setup = page.evaluate(SETUP_INITIATOR, {"remoteStatic": raw_public(host_static).hex(), "psk": "11" * 32})
    responder = SecureChannel.responder(static=host_static, psk=b"\x22" * 32)
    # Message 1 does not prove the psk yet (it can be replayed); message 2 does.
    responder.receive(bytes.fromhex(setup["frames"][0]))
    result = page.evaluate(FEED, [responder.data_to_send()[0].hex()])
    assert result["state"] == "closed"
    assert "pairing secret did not match" in result["error"]
