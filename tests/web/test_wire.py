"""The browser's relay frames, admission signature and ids agree byte for byte with Python's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tether.crypto.keys import derive_id, verify_signature
from tether.protocol.frames import (
    AUTH_CONTEXT,
    PROTOCOL_VERSION,
    Close,
    CloseCode,
    Data,
    FrameError,
    FrameType,
    Hello,
    MailboxDeposit,
    MailboxError,
    MailboxGet,
    MailboxOk,
    MailboxQueue,
    MailboxSnapshot,
    Open,
    Opened,
    Presence,
    Redirect,
    Role,
    Watch,
    Welcome,
    auth_message,
    decode_frame,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ENCODE = """
async () => {
  const f = await import("/frames.js");
  const { toHex } = await import("/bytes.js");
  const key = new Uint8Array(32).map((_, i) => i);
  return {
    hello: toHex(f.encodeHello(f.Role.DEVICE, key)),
    open: toHex(f.encodeOpen(0xdeadbeef, "abcdefghijklmnopqrst", "offer_ID-123")),
    open_plain: toHex(f.encodeOpen(7, "abcdefghijklmnopqrst")),
    data: toHex(f.encodeData(1, new Uint8Array([1, 2, 3]))),
    close: toHex(f.encodeClose(9, 6, "too slow ✓")),
    watch: toHex(f.encodeWatch(["abcdefghijklmnopqrst", "bbcdefghijklmnopqrst"])),
    mailbox_get: toHex(f.encodeMailboxGet(0xfffffffe, "abcdefghijklmnopqrst")),
    mailbox_queue: toHex(f.encodeMailboxQueue(3, "abcdefghijklmnopqrst", new Uint8Array(200).map((_, i) => i))),
  };
}
"""

REFUSED = """
async () => {
  const f = await import("/frames.js");
  const refused = [];
  for (const [what, make] of [
    ["empty item", () => f.encodeMailboxQueue(1, "abcdefghijklmnopqrst", new Uint8Array(0))],
    ["oversized item", () => f.encodeMailboxQueue(1, "abcdefghijklmnopqrst", new Uint8Array(65536))],
    ["bad host id", () => f.encodeMailboxGet(1, "no spaces")],
    ["req too large", () => f.encodeMailboxGet(2 ** 32, "abcdefghijklmnopqrst")],
  ]) {
    try { make(); } catch (err) { if (err.name === "FrameError") refused.push(what); }
  }
  return refused;
}
"""

DECODE = """
async (frames) => {
  const f = await import("/frames.js");
  const { fromHex } = await import("/bytes.js");
  const out = [];
  for (const hex of frames) {
    try { const fr = f.decodeFrame(fromHex(hex)); out.push({ ok: true, type: fr.type, fields: JSON.stringify(fr) }); }
    catch (err) { out.push({ ok: false, error: err.name }); }
  }
  return out;
}
"""


def test_frames_match_python(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    js = {k: bytes.fromhex(v) for k, v in page.evaluate(ENCODE).items()}
    assert js["hello"] == Hello(Role.DEVICE, bytes(range(32))).encode()
    assert js["open"] == Open(0xDEADBEEF, "abcdefghijklmnopqrst", "offer_ID-123").encode()
    assert js["open_plain"] == Open(7, "abcdefghijklmnopqrst").encode()
    assert js["data"] == Data(1, b"\x01\x02\x03").encode()
    assert js["close"] == Close(9, 6, "too slow ✓").encode()
    assert js["watch"] == Watch(("abcdefghijklmnopqrst", "bbcdefghijklmnopqrst")).encode()
    assert js["mailbox_get"] == MailboxGet(0xFFFF_FFFE, "abcdefghijklmnopqrst").encode()
    assert js["mailbox_queue"] == MailboxQueue(3, "abcdefghijklmnopqrst", bytes(range(200))).encode()
    for frame in js.values():
        decode_frame(frame)  # the relay's parser accepts every one

    frames = [
        Welcome("abcdefghijklmnopqrst", 70_000).encode(),
        Opened(5).encode(),
        Presence("abcdefghijklmnopqrst", True).encode(),
        Close(5, 2, "not allowed").encode(),
        Opened(5).encode() + b"\x00",  # trailing byte
        b"\x99",  # unknown type
        b"",
    ]
    out = page.evaluate(DECODE, [f.hex() for f in frames])
    assert [o["ok"] for o in out] == [True] * 4 + [False] * 3
    assert all(o["error"] == "FrameError" for o in out[4:])
    assert '"online":true' in out[2]["fields"] and '"maxFrameBytes":70000' in out[0]["fields"]


def test_admission_signature_and_device_id_match_python(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    nonce = bytes(range(100, 132))
    result = page.evaluate(
        """async (nonceHex) => {
          const { DeviceIdentity } = await import("/keys.js");
          const { authMessage, Role } = await import("/frames.js");
          const { fromHex, toHex } = await import("/bytes.js");
          const signing = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
          const stat = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
          const identity = await DeviceIdentity.fromRecord({
            signing: signing.privateKey,
            identityPublic: new Uint8Array(await crypto.subtle.exportKey("raw", signing.publicKey)),
            static: stat.privateKey,
            staticPublic: new Uint8Array(await crypto.subtle.exportKey("raw", stat.publicKey)),
          });
          const message = authMessage(Role.DEVICE, fromHex(nonceHex));
          return { key: toHex(identity.identityPublic), id: identity.id, message: toHex(message),
                   signature: toHex(await identity.sign(message)) };
        }""",
        nonce.hex(),
    )
    key = bytes.fromhex(result["key"])
    assert bytes.fromhex(result["message"]) == auth_message(Role.DEVICE, nonce)
    assert bytes.fromhex(result["message"]).startswith(AUTH_CONTEXT)
    assert verify_signature(key, bytes.fromhex(result["signature"]), auth_message(Role.DEVICE, nonce))
    assert result["id"] == derive_id(key)


def test_mailbox_frames_match_python(page: Any, static_relay: int) -> None:
    """What a device sends to the relay's mailbox and what it is answered, both ways against
    frames.py; a malformed one is a FrameError on either side."""
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    assert page.evaluate(REFUSED) == ["empty item", "oversized item", "bad host id", "req too large"]
    sealed = bytes(range(256)) * 3
    frames = [
        MailboxSnapshot(7, 1_700_000_000_123, sealed).encode(),
        MailboxSnapshot(8, 0, b"").encode(),
        MailboxOk(9, 2**40 + 5).encode(),
        MailboxError(10, CloseCode.MAILBOX_FULL, "the items queued for this host fill its mailbox ✓").encode(),
        MailboxGet(11, "abcdefghijklmnopqrst").encode(),
        MailboxQueue(12, "abcdefghijklmnopqrst", b"\x01\x02").encode(),
        MailboxDeposit(13, bytes(32), b"x").encode(),  # a host's: opaque to a browser
        MailboxOk(9, 1).encode()[:-1],  # truncated
        MailboxSnapshot(7, 1, b"").encode() + b"\x00" * 65536,  # a blob over one Noise message
        bytes([FrameType.MAILBOX_QUEUE]) + MailboxGet(1, "abcdefghijklmnopqrst").encode()[1:5] + b"\x01a",  # empty item
        MailboxError(10, 19, "x").encode()[:7] + b"\xff",  # not UTF-8
    ]
    for bad in frames[-4:]:
        with pytest.raises(FrameError):
            decode_frame(bad)
    out = page.evaluate(DECODE, [f.hex() for f in frames])
    assert [o["ok"] for o in out] == [True] * 7 + [False] * 4, out
    assert all(o["error"] == "FrameError" for o in out[7:])
    fields = [json.loads(o["fields"]) for o in out[:7]]
    assert fields[0]["req"] == 7 and fields[0]["depositedAtMs"] == 1_700_000_000_123
    assert bytes(fields[0]["sealed"][str(i)] for i in range(len(sealed))) == sealed
    assert fields[1]["sealed"] == {} and fields[1]["depositedAtMs"] == 0
    assert fields[2] == {"type": FrameType.MAILBOX_OK, "req": 9, "value": 2**40 + 5}
    assert fields[3] == {"type": FrameType.MAILBOX_ERROR, "req": 10, "code": 19,
                         "message": "the items queued for this host fill its mailbox ✓"}
    assert fields[4] == {"type": FrameType.MAILBOX_GET, "req": 11, "hostId": "abcdefghijklmnopqrst"}
    assert fields[5]["req"] == 12 and fields[5]["hostId"] == "abcdefghijklmnopqrst"
    assert fields[6]["type"] == FrameType.MAILBOX_DEPOSIT


def test_redirect_frames_match_python(page: Any, static_relay: int) -> None:
    """A cluster node's REDIRECT (protocol 3) as frames.py encodes it, decoded by the browser; a
    malformed one is a FrameError on either side; the page's HELLO says version 3."""
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    assert PROTOCOL_VERSION == 3
    assert page.evaluate('async () => (await import("/frames.js")).PROTOCOL_VERSION') == PROTOCOL_VERSION
    frames = [
        Redirect("abcdefghijklmnopqrst", "https://relay.example.com/node-1").encode(),
        Redirect("abcdefghijklmnopqrst", "wss://nœud-2.example.com:8443/ws").encode(),
        Redirect("abcdefghijklmnopqrst", "").encode(),
        Redirect("abcdefghijklmnopqrst", "x").encode()[:-3],  # host id cut short
        bytes([FrameType.REDIRECT, 3]) + b"a b" + b"https://x",  # not an id
        Redirect("abcdefghijklmnopqrst", "").encode() + b"\xff",  # not UTF-8
        Redirect("abcdefghijklmnopqrst", "").encode() + b"u" * 1025,  # longer than any text
    ]
    for bad in frames[3:]:
        with pytest.raises(FrameError):
            decode_frame(bad)
    out = page.evaluate(DECODE, [f.hex() for f in frames])
    assert [o["ok"] for o in out] == [True] * 3 + [False] * 4, out
    assert all(o["error"] == "FrameError" for o in out[3:])
    fields = [json.loads(o["fields"]) for o in out[:3]]
    assert fields[0] == {"type": FrameType.REDIRECT, "hostId": "abcdefghijklmnopqrst",
                         "url": "https://relay.example.com/node-1"}
    assert fields[1]["url"] == "wss://nœud-2.example.com:8443/ws" and fields[2]["url"] == ""
